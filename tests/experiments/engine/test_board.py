"""TensorBoard logging: a smoke run with ``train.tensorboard=true`` writes events TensorBoard reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from idspn_experiments.engine.config import config_diff, config_to_dict, load_config
from idspn_experiments.engine.train import fit
from idspn_experiments.numbering.config import NumberingConfig
from idspn_experiments.numbering.task import NUMBERING

SMOKE = [
    "model.name=idspn",
    "train.steps=6",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.tensorboard=true",
]


def _events(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_a_smoke_run_writes_the_expected_scalars(tmp_path):
    run = tmp_path / "run"
    result = fit(NUMBERING, load_config(NumberingConfig, "numbering-smoke", SMOKE), run, progress=False)
    events = _events(run)
    tags = set(events.Tags()["scalars"])
    inner = {f"inner/{k}" for k in ("initial_objective", "final_objective", "final_grad_norm", "distance")}
    assert {"train/loss", "train/lr", "val/accuracy", "val/loss", "test/accuracy", *inner} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("val/accuracy")] == [3, 6]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in records if r["split"] == "train"]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(train_losses, rel=1e-6)
    assert events.Scalars("test/accuracy")[0].value == pytest.approx(result.test["accuracy"], rel=1e-6)
    final = [e.value for e in events.Scalars("inner/final_objective")]
    start = [e.value for e in events.Scalars("inner/initial_objective")]
    assert all(f < s for f, s in zip(final, start, strict=True))  # the inner loop lowers its objective


def test_a_resumed_run_keeps_each_step_once_and_the_switch_is_not_part_of_the_config_check(tmp_path):
    run = tmp_path / "run"
    cfg = load_config(NumberingConfig, "numbering-smoke", SMOKE)
    assert fit(NUMBERING, cfg, run, progress=False, stop_at_step=5) is None  # steps 4-5 after the checkpoint
    off = load_config(NumberingConfig, "numbering-smoke", [*SMOKE[:-1], "train.tensorboard=false"])
    assert config_diff(config_to_dict(cfg), config_to_dict(off)) == []
    fit(NUMBERING, cfg, run, resume=True, progress=False)
    assert [e.step for e in _events(run).Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]


def test_the_switch_without_the_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ValueError, match=r"train.tensorboard.*pip install 'idspn\[tensorboard\]'"):
        fit(NUMBERING, load_config(NumberingConfig, "numbering-smoke", SMOKE), tmp_path / "run", progress=False)
