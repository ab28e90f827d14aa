import random

import numpy as np
import pytest
import torch

from idspn.experiments.checkpoint import (
    atomic_write,
    atomic_write_json,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"step": 1})

    def broken(f):
        f.write(b'{"step": 2, "trunc')
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert path.read_text().strip().startswith("{") and '"step": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left behind


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    state = {"model": {"w": torch.arange(3.0)}, "step": 5, "rng": [capture_rng_state()], "best": {"value": None}}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["step"] == 5


def test_mapped_checkpoint_gives_the_same_state(tmp_path):
    state = {"step": 7, "model": {"w": torch.randn(300, 200)}}
    save_checkpoint(tmp_path / "last.pt", state)
    mapped = load_checkpoint(tmp_path / "last.pt", mmap=True)
    assert mapped["step"] == 7
    assert torch.equal(mapped["model"]["w"], state["model"]["w"])


def test_rng_state_round_trip_restores_all_generators():
    seed_everything(3, 1)
    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_seed_tuples_give_distinct_streams():
    seed_everything(0, 1)
    a = torch.rand(4)
    seed_everything(0, 2)
    b = torch.rand(4)
    seed_everything(0, 1)
    assert torch.equal(a, torch.rand(4)) and not torch.equal(a, b)
