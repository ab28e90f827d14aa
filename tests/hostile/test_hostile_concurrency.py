"""Concurrency: two processes on one run folder, one data folder or one image cache at once.

Two reproductions started together on one ``--out`` are covered by
``tests/experiments/runs/test_executors.py::test_two_reproductions_into_one_folder_train_each_run_once``.
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from support import CLEVR_FIXTURE

# Long enough to still hold its folder while a second process starts (a few seconds of deepsets).
OVERRIDES = ["model.name=deepsets", "train.steps=100000", "train.eval_every=1000", "train.checkpoint_every=20"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _idspn(*args: str) -> list[str]:
    return [sys.executable, "-m", "idspn_experiments", *args]


def _start_training(run: Path) -> subprocess.Popen:
    """Start a long ``idspn train`` and return once it has logged steps and saved a checkpoint."""
    argv = _idspn("train", "numbering-smoke", *OVERRIDES, "--out", str(run), "--no-progress")
    process = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((run / "last.pt").exists() and (run / "metrics.jsonl").exists()):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the first run never saved a checkpoint"
        time.sleep(0.05)
    return process


def _steps(run: Path) -> list[int]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.endswith("}")]
    return [r["step"] for r in records if r["split"] == "train"]


def test_concurrency_clear_a_second_train_into_a_folder_in_use_is_refused(tmp_path):
    """A second ``train`` exits 2: a fresh one because the folder holds a run, a ``--resume`` naming the
    lock; the first one's log stays in order; once the holder is killed, its lock goes with it."""
    run = tmp_path / "run"
    first = _start_training(run)
    try:
        answers = {
            "": f"{run} already holds a run (last.pt",  # a fresh run would overwrite it: refused first
            "--resume": f"run folder {run} is in use by another process (it holds {run / '.lock'})",
        }
        for extra, answer in answers.items():
            argv = _idspn("train", "numbering-smoke", *OVERRIDES, "--out", str(run), "--no-progress", extra)
            second = subprocess.run([a for a in argv if a], env=ENV, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr
            assert answer in second.stderr and "Traceback" not in second.stderr, second.stderr
            assert first.poll() is None  # the holder was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    steps = _steps(run)
    assert steps == list(range(1, len(steps) + 1))  # one writer: no duplicated or reordered records
    argv = _idspn("train", "numbering-smoke", *OVERRIDES, "--out", str(run), "--resume", "--no-progress")
    assert _resume_takes_the_folder(argv, run)  # the killed holder left no stale lock


def _resume_takes_the_folder(argv: list[str], run: Path) -> bool:
    """Start ``argv`` (a resume into ``run``), wait until it logs a new step, then stop it."""
    before = len(_steps(run))
    process = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(process.stderr.read())
            if len(_steps(run)) > before:
                return True
            time.sleep(0.05)
        return False
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()


def test_concurrency_correct_two_generators_into_one_folder_write_what_one_writes(tmp_path):
    """Two ``data clevr-synth`` at once on one folder take turns; the files equal a lone generation's."""
    sizes = ["--train", "3", "--val", "2", "--seed", "5", "--no-progress"]
    together = tmp_path / "together"
    processes = [
        subprocess.Popen(
            _idspn("data", "clevr-synth", "--out", str(together), *sizes),
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    alone = tmp_path / "alone"
    lone = subprocess.run(
        _idspn("data", "clevr-synth", "--out", str(alone), *sizes), env=ENV, capture_output=True, text=True
    )
    assert lone.returncode == 0, lone.stderr
    files = sorted(str(p.relative_to(alone)) for p in alone.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    assert len(files) == 3 + 2 + 2 + 2  # images, scenes files, generator records
    assert (
        sorted(
            str(p.relative_to(together)) for p in together.rglob("*") if p.is_file() and not p.name.endswith(".lock")
        )
        == files
    )
    match, mismatch, error = filecmp.cmpfiles(alone, together, files, shallow=False)
    assert (mismatch, error) == ([], [])


def test_concurrency_correct_two_cache_builds_of_one_split_read_the_same_pixels(tmp_path):
    """Two loaders building one split's image cache at once: both see the pixels of an uncached load."""
    from idspn_experiments.clevr.config import ClevrConfig
    from idspn_experiments.clevr.data import CLEVRDataset, clevr_split
    from idspn_experiments.engine.config import load_config

    root = CLEVR_FIXTURE / "CLEVR_v1.0"
    cfg = load_config(
        ClevrConfig, "clevr-smoke", [f"data.work_dir={tmp_path}", "data.image_size=16", "data.val_size=4"]
    )
    with ThreadPoolExecutor(2) as pool:
        loaded = list(pool.map(lambda _: clevr_split(cfg, root, "val", progress=False), range(2)))
    plain = CLEVRDataset(root, "val", 16, max_samples=4)
    for dataset in loaded:
        assert len(dataset) == len(plain) == 4
        for i in range(4):
            assert torch.equal(dataset[i][0], plain[i][0]) and torch.equal(dataset[i][1], plain[i][1])
    assert not list(tmp_path.rglob("*.tmp"))
