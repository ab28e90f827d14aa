import io
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from idspn_experiments.engine.checkpoint import (
    CorruptCheckpoint,
    capture_rng_state,
    load_checkpoint,
    previous_checkpoint,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
)


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


def test_keep_previous_moves_the_replaced_checkpoint_aside(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1}, keep_previous=True)
    assert not previous_checkpoint(path).exists()  # nothing to keep yet
    save_checkpoint(path, {"step": 2}, keep_previous=True)
    assert load_checkpoint(path)["step"] == 2 and load_checkpoint(previous_checkpoint(path))["step"] == 1


@pytest.mark.parametrize("damage", ["empty", "truncated", "text", "folder", "list"])
def test_a_damaged_checkpoint_is_named_in_the_error(tmp_path, damage):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 3, "model": {"w": torch.randn(64, 64)}})
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "text":
        path.write_text("not a checkpoint")
    elif damage == "folder":
        path.unlink()
        path.mkdir()
    else:
        torch.save([1, 2], path)
    with pytest.raises(CorruptCheckpoint, match="last.pt"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


_BYTES = settings(max_examples=150, deadline=None, derandomize=True)


def _load_or_corrupt(data: bytes) -> dict | None:
    """Load ``data`` as a checkpoint file: its state, or None when it is named corrupt; anything else escapes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.pt"
        path.write_bytes(data)
        try:
            return load_checkpoint(path)
        except CorruptCheckpoint as err:
            assert "last.pt" in str(err) and "cannot be read" in str(err) or "holds a" in str(err), str(err)
            return None


@_BYTES
@given(
    data=st.one_of(
        st.binary(max_size=256), st.text(max_size=128).map(str.encode), st.text("0123456789abcdef").map(str.encode)
    )
)
def test_any_bytes_are_a_corrupt_checkpoint(data):
    """Random bytes, text or hex go to no unpickler: they are named corrupt, whatever they hold."""
    assert _load_or_corrupt(data) is None


@_BYTES
@given(position=st.floats(0, 1, exclude_max=True), value=st.integers(0, 255), cut=st.booleans())
def test_a_checkpoint_damaged_anywhere_loads_or_is_named_corrupt(position, value, cut):
    """One byte changed, or the file cut there: it loads (the change hit an unread byte) or it is
    ``CorruptCheckpoint``; no other exception escapes the reader or the unpickler."""
    buffer = io.BytesIO()
    torch.save({"step": 3, "model": {"w": torch.arange(6.0)}, "best": {"value": None, "val": {}}}, buffer)
    data = bytearray(buffer.getvalue())
    at = int(position * len(data))
    if cut:
        del data[at:]
    else:
        data[at] = value
    state = _load_or_corrupt(bytes(data))
    assert state is None or isinstance(state, dict)
