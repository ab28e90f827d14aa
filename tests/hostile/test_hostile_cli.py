"""The ``idspn`` command under hostile arguments: every answer is a clear error or the right result."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch

from idspn_experiments.cli import main

SMOKE = ["numbering-smoke", "model.name=deepsets"]  # the quickest model: seconds per run


def _cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code if isinstance(exit.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


SETTING_ERRORS = {
    "grad-clip-negative": ("train.grad_clip=-1", r"'train.grad_clip'.*-1"),
    "grad-clip-zero": ("train.grad_clip=0", r"'train.grad_clip'"),
    "lr-gamma-negative": ("train.lr_gamma=-1", r"'train.lr_gamma'"),
    "steps-negative": ("train.steps=-5", r"'train.steps'.*-5"),
    "steps-zero": ("train.steps=0", r"'train.steps'"),
    "eval-every-zero": ("train.eval_every=0", r"'train.eval_every'"),
    "checkpoint-every-zero": ("train.checkpoint_every=0", r"'train.checkpoint_every'"),
    "eval-batch-zero": ("train.eval_batch_size=0", r"'train.eval_batch_size'"),
    "batch-zero": ("train.batch_size=0", r"'train.batch_size'"),
    "lr-negative": ("train.lr=-1", r"'train.lr'"),
    "seed-negative": ("seed=-1", r"'seed'"),
    "heads-zero": ("model.heads=0", r"'model.heads'"),
    "heads-not-dividing": ("model.name=transformer_pe model.heads=3", r"'model.heads'.*divide"),
    "layers-zero": ("model.layers=0", r"'model.layers'"),
    "inner-lr-nan": ("model.lr=nan", r"'model.lr'"),
    "momentum-one": ("model.momentum=1", r"'model.momentum'"),
    "unknown-key": ("model.depth=3", r"unknown config key 'model.depth'"),
    "wrong-type": ("train.steps=many", r"'train.steps'.*many"),
    "unknown-model": ("model.name=resnet", r"'model.name'.*resnet"),
    "classes-zero": ("data.classes=0", r"'data.classes'"),
    "not-key-value": ("train.steps", r"key=value"),
}


@pytest.mark.parametrize(
    ("override", "message"), list(SETTING_ERRORS.values()), ids=[f"cli-clear-{k}" for k in SETTING_ERRORS]
)
def test_a_bad_setting_is_named_before_training(tmp_path, capsys, override, message):
    argv = ["train", *SMOKE, *override.split(), "--out", str(tmp_path / "run"), "--no-progress"]
    code, _, err = _cli(capsys, argv)
    assert code == 2 and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing trained


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _foreign_checkpoint(path: Path) -> Path:
    torch.save({"weights": torch.zeros(2)}, path)
    return path


def _trained(tmp_path: Path, capsys) -> Path:
    run = tmp_path / "trained"
    assert _cli(capsys, ["train", *SMOKE, "--out", str(run), "--no-progress"])[0] == 0
    return run


CASES = {
    "preset-syntax-error": (
        lambda tmp, capsys: [
            "train",
            str(_write(tmp / "bad.json", '{"experiment": "numbering",')),
            "--out",
            str(tmp / "r"),
        ],
        r"preset file .*bad.json.* is not valid JSON: .* line 1",
    ),
    "preset-missing-file": (
        lambda tmp, capsys: ["train", str(tmp / "none.json"), "--out", str(tmp / "r")],
        r"none.json",
    ),
    "preset-unknown": (lambda tmp, capsys: ["train", "numbering-huge", "--out", str(tmp / "r")], r"unknown preset"),
    "out-empty": (lambda tmp, capsys: ["train", *SMOKE, "--out", ""], r"--out must name a folder"),
    "out-is-a-file": (
        lambda tmp, capsys: ["train", *SMOKE, "--out", str(_write(tmp / "file", "x"))],
        r"--out .*file.* is a file, not a folder",
    ),
    "out-under-a-file": (
        lambda tmp, capsys: ["train", *SMOKE, "--out", str(_write(tmp / "file", "x") / "run")],
        r"--out .* lies under a file",
    ),
    "reproduce-out-is-a-file": (
        lambda tmp, capsys: ["reproduce", "numbering", "--budget", "smoke", "--out", str(_write(tmp / "f", "x"))],
        r"--out .* is a file",
    ),
    "reproduce-results-json-is-a-folder": (
        lambda tmp, capsys: (
            (tmp / "rep" / "results.json").mkdir(parents=True),
            ["reproduce", "numbering", "--budget", "smoke", "--out", str(tmp / "rep"), "--rows", "deepsets"],
        )[1],
        r"results.json' is a folder: cannot write a file in its place",
    ),
    "slurm-options-without-slurm": (
        lambda tmp, capsys: [
            "reproduce",
            "numbering",
            "--budget",
            "smoke",
            "--out",
            str(tmp / "r"),
            "--slurm",
            "partition=gpu",
        ],
        r"--slurm.*--executor slurm",
    ),
    "workers-zero": (
        lambda tmp, capsys: ["reproduce", "numbering", "--budget", "smoke", "--out", str(tmp / "r"), "--workers", "0"],
        r"workers",
    ),
    "unknown-row": (
        lambda tmp, capsys: ["reproduce", "numbering", "--budget", "smoke", "--out", str(tmp / "r"), "--rows", "mlp"],
        r"unknown rows \['mlp'\]",
    ),
    "unknown-budget": (
        lambda tmp, capsys: ["reproduce", "numbering", "--budget", "huge", "--out", str(tmp / "r")],
        r"invalid choice: 'huge'",
    ),
    "eval-missing-file": (lambda tmp, capsys: ["eval", str(tmp / "best.pt")], r"checkpoint .*best.pt.* does not exist"),
    "eval-folder": (lambda tmp, capsys: ["eval", str(tmp)], r"is a folder, not a checkpoint file"),
    "eval-empty-file": (
        lambda tmp, capsys: ["eval", str(_write(tmp / "empty.pt", ""))],
        r"checkpoint .*empty.pt.* \(0 bytes\) cannot be read",
    ),
    "eval-random-bytes": (
        lambda tmp, capsys: ["eval", str(_write(tmp / "noise.pt", random.Random(0).randbytes(64).hex()))],
        r"checkpoint .*noise.pt.* cannot be read",
    ),
    "eval-foreign-checkpoint": (
        lambda tmp, capsys: ["eval", str(_foreign_checkpoint(tmp / "other.pt"))],
        r"other.pt is not an idspn run checkpoint",
    ),
    "eval-overrides-that-do-not-fit": (
        lambda tmp, capsys: ["eval", str(_trained(tmp, capsys) / "best.pt"), "model.hidden_dim=7"],
        r"do not fit the model these settings build \(overrides: model.hidden_dim=7\): .* has shape",
    ),
    "train-over-an-existing-run": (
        lambda tmp, capsys: ["train", *SMOKE, "--out", str(_trained(tmp, capsys))],
        r"already holds a run.*--resume",
    ),
    "synth-out-is-a-file": (
        lambda tmp, capsys: ["data", "clevr-synth", "--out", str(_write(tmp / "f", "x")), "--train", "1", "--val", "1"],
        r"--out .* is a file",
    ),
    "synth-negative-count": (
        lambda tmp, capsys: ["data", "clevr-synth", "--out", str(tmp / "d"), "--train", "-1"],
        r"--train must be >= 0, got -1",
    ),
}


@pytest.mark.parametrize(("make_args", "message"), list(CASES.values()), ids=[f"cli-clear-{k}" for k in CASES])
def test_a_bad_command_line_is_named(tmp_path, capsys, make_args, message):
    argv = make_args(tmp_path, capsys)
    code, _, err = _cli(capsys, [*argv, "--no-progress"] if argv[0] in ("train", "eval") else argv)
    assert code == 2, (code, err)
    assert "Traceback" not in err and re.search(message, err), err


def test_cli_correct_resume_without_a_checkpoint_says_it_starts_fresh(tmp_path, capsys):
    code, out, err = _cli(capsys, ["train", *SMOKE, "--out", str(tmp_path / "run"), "--resume", "--no-progress"])
    assert code == 0 and "no checkpoint" in err and "training from step 0" in err
    assert json.loads(out)["best_step"] > 0


def test_cli_correct_no_progress_draws_no_bar(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IDSPN_DATA_DIR", str(tmp_path / "data"))
    code, _, err = _cli(capsys, ["train", "clevr-smoke", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 0 and "it/s" not in err and "%|" not in err, err
