"""Faults: kills at random moments, torn logs, damaged checkpoints and result files, stale caches."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import CLEVR_FIXTURE

from idspn_experiments.cli import main
from idspn_experiments.engine.checkpoint import previous_checkpoint
from idspn_experiments.engine.config import load_config
from idspn_experiments.engine.train import fit, load_run_result
from idspn_experiments.numbering.config import NumberingConfig
from idspn_experiments.numbering.task import NUMBERING

# A run long enough to be killed part-way: checkpoints every 4 steps, 40 steps of the quickest model.
OVERRIDES = ["model.name=deepsets", "train.steps=40", "train.eval_every=8", "train.checkpoint_every=4"]


def _cfg() -> NumberingConfig:
    return load_config(NumberingConfig, "numbering-smoke", OVERRIDES)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The result and log of the run trained without interruption."""
    run = tmp_path_factory.mktemp("whole") / "run"
    result = fit(NUMBERING, _cfg(), run, progress=False)
    return result, _train_records(run)


def _train_records(run: Path) -> list[dict]:
    """The log's records without their wall times (which differ from run to run)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in records]


def _kill_after(run: Path, records: int) -> None:
    """Start ``idspn train`` in a process and SIGKILL it once its log holds ``records`` lines."""
    argv = [
        sys.executable,
        "-m",
        "idspn_experiments",
        "train",
        "numbering-smoke",
        *OVERRIDES,
        "--out",
        str(run),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and log.read_text().count("\n") >= records and (run / "last.pt").exists():
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _resume(run: Path, capsys) -> tuple[int, str]:
    code = main(["train", "numbering-smoke", *OVERRIDES, "--out", str(run), "--resume", "--no-progress"])
    return code, capsys.readouterr().err


DAMAGES = ("none", "torn-log", "truncated-checkpoint", "deleted-log")
MOMENTS = random.Random(14).sample(range(10, 38), len(DAMAGES))  # log lines at which the kill lands, drawn once


@pytest.mark.parametrize(
    ("moment", "damage"),
    list(zip(MOMENTS, DAMAGES, strict=True)),
    ids=[f"faults-correct-kill-at-line-{m}-{d}" for m, d in zip(MOMENTS, DAMAGES, strict=True)],
)
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, capsys, uninterrupted, moment, damage):
    whole, whole_records = uninterrupted
    run = tmp_path / "run"
    _kill_after(run, moment)
    if (run / "result.json").exists():
        pytest.skip("the run finished before the kill landed")  # not reached with these sizes
    if damage == "torn-log":
        with (run / "metrics.jsonl").open("a") as f:
            f.write('{"step": 999, "split": "tra')
    elif damage == "truncated-checkpoint":
        last = run / "last.pt"
        if not previous_checkpoint(last).exists():
            pytest.skip("killed before a second checkpoint")
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])
    elif damage == "deleted-log":
        (run / "metrics.jsonl").unlink()
    code, err = _resume(run, capsys)
    assert code == 0, err
    resumed = load_run_result(run)
    assert resumed.test == whole.test and resumed.val == whole.val and resumed.best_step == whole.best_step
    if damage == "torn-log":
        assert "dropped a half-written last line" in err
    if damage == "truncated-checkpoint":
        assert "resuming from the previous checkpoint" in err and "last.pt" in err
    if damage == "deleted-log":
        assert "holds no training records" in err
    else:
        assert _train_records(run) == whole_records
    assert not list(run.glob(".*.tmp")) and not previous_checkpoint(run / "last.pt").exists()


def test_faults_clear_both_checkpoints_damaged_names_the_files(tmp_path, capsys):
    run = tmp_path / "run"
    assert fit(NUMBERING, _cfg(), run, progress=False, stop_at_step=10) is None
    for path in (run / "last.pt", previous_checkpoint(run / "last.pt")):
        path.write_bytes(b"\0" * 10)
    code, err = _resume(run, capsys)
    assert code == 2 and "last.pt" in err and "last.pt.prev" in err and "Remove" in err, err


def test_faults_correct_leftover_temporaries_are_removed_on_the_next_start(tmp_path):
    run = tmp_path / "run"
    assert fit(NUMBERING, _cfg(), run, progress=False, stop_at_step=10) is None
    (run / ".last.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    fit(NUMBERING, _cfg(), run, resume=True, progress=False)
    assert not list(run.glob(".*.tmp"))


def _reproduce_deepsets(out: Path) -> list[str]:
    """The command line of a smoke numbering reproduction of the DeepSets row into ``out``."""
    return ["reproduce", "numbering", "--budget", "smoke", "--out", str(out), "--rows", "deepsets", "--no-progress"]


@pytest.fixture(scope="module")
def deepsets_reproduction(tmp_path_factory) -> Path:
    """One smoke reproduction of the DeepSets row, made under the default umask; copy it to damage it."""
    out = tmp_path_factory.mktemp("reproduction")
    old = os.umask(0o022)
    try:
        assert main(_reproduce_deepsets(out)) == 0
    finally:
        os.umask(old)
    return out


def test_faults_correct_result_files_get_the_usual_permissions(deepsets_reproduction):
    out = deepsets_reproduction
    files = [
        out / "results.json",
        out / "results.md",
        out / "manifest.json",
        *out.glob("runs/**/result.json"),
        *out.glob("runs/**/metrics.jsonl"),
    ]
    assert len(files) > 5
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"result.json.* is not valid JSON"),
        ('{"experiment": "numbering"', r"result.json.* is not valid JSON"),
        ('{"experiment": "numbering"}', r"result.json' does not hold a run result \(fields \['experiment'\]"),
        ("[1, 2]", r"result.json' does not hold a run result \(fields list"),
    ],
    ids=[
        "faults-clear-empty-result",
        "faults-clear-torn-result",
        "faults-clear-result-missing-fields",
        "faults-clear-result-not-an-object",
    ],
)
def test_a_damaged_result_in_a_reproduction_is_named(tmp_path, capsys, deepsets_reproduction, content, message):
    out = shutil.copytree(deepsets_reproduction, tmp_path / "reproduction")
    args = _reproduce_deepsets(out)
    victim = sorted(out.glob("runs/**/result.json"))[1]
    victim.write_text(content)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and str(victim.parent.relative_to(out)) in err, err


@pytest.fixture
def clevr_copy(tmp_path: Path) -> Path:
    """The four scenes of the real-format fixture, copied so they can be damaged."""
    source = CLEVR_FIXTURE / "CLEVR_v1.0"
    root = tmp_path / "CLEVR_v1.0"
    shutil.copytree(source, root)
    return root


def test_faults_correct_a_png_replaced_after_caching_is_read_again(clevr_copy, tmp_path):
    from PIL import Image

    from idspn_experiments.clevr.data import CLEVRDataset

    cache = tmp_path / "cache" / "val"
    first = CLEVRDataset(clevr_copy, "val", image_size=16, cache=cache, progress=False)
    before = [first[i][0].clone() for i in range(len(first))]
    png = clevr_copy / "images" / "val" / "CLEVR_val_000002.png"
    Image.new("RGB", (480, 320), (255, 0, 0)).save(png)  # another picture under the same name
    again = CLEVRDataset(clevr_copy, "val", image_size=16, cache=cache, progress=False)
    assert not torch.equal(before[2], again[2][0])
    assert torch.equal(again[2][0][0], torch.ones(16, 16)) and torch.equal(again[2][0][1:], torch.zeros(2, 16, 16))
    assert all(torch.equal(before[i], again[i][0]) for i in (0, 1, 3))


def test_faults_clear_a_truncated_png_after_caching_is_named(clevr_copy, tmp_path):
    from idspn_experiments.clevr.data import CLEVRDataset

    cache = tmp_path / "cache" / "val"
    CLEVRDataset(clevr_copy, "val", image_size=16, cache=cache, progress=False)
    png = clevr_copy / "images" / "val" / "CLEVR_val_000001.png"
    png.write_bytes(png.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"CLEVR_val_000001.png"):
        CLEVRDataset(clevr_copy, "val", image_size=16, cache=cache, progress=False)


def test_faults_clear_non_finite_scene_coordinates_are_named_at_load(clevr_copy):
    from idspn_experiments.clevr.data import CLEVRDataset

    scenes_file = clevr_copy / "scenes" / "CLEVR_val_scenes.json"
    data = json.loads(scenes_file.read_text())
    data["scenes"][2]["objects"][1]["3d_coords"] = [float("nan"), 0.0, 0.0]
    scenes_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"CLEVR_val_scenes.json.*scene 2 .*object 1.*3d_coords.*finite"):
        CLEVRDataset(clevr_copy, "val", image_size=16)
