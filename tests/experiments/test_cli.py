import argparse
import contextlib
import json
from pathlib import Path

from idspn_experiments import registry
from idspn_experiments.cli import main
from idspn_experiments.engine import train as train_module
from idspn_experiments.registry import DataCommand


def test_reproduce_smoke_writes_results_and_is_idempotent(tmp_path, capsys):
    out = tmp_path / "numbering"
    assert main(["reproduce", "numbering", "--budget", "smoke", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Table 2" in printed and "| iDSPN (ours) | ✗ | ✓ |" in printed
    data = json.loads((out / "results.json").read_text())
    assert data["budget"] == "smoke" and data["seeds"] == [0] and len(data["runs"]) == 21
    assert {(r["row"], r["column"]) for r in data["runs"]} == {
        (m, c)
        for m in ("deepsets", "transformer_no_pe", "transformer_random_pe", "transformer_pe", "bilstm", "dspn", "idspn")
        for c in ("1x", "10x", "100x")
    }
    run = data["runs"][0]
    assert set(run["test"]) >= {"accuracy"} and run["wall_time_s"] > 0 and run["budget"] == "smoke"
    md = (out / "results.md").read_text()
    assert "96.8 ± 0.6" in md and "not comparable" in md
    # running again skips every finished run and gives the same table
    assert main(["reproduce", "numbering", "--budget", "smoke", "--out", str(out), "--no-progress"]) == 0
    assert "21 runs, 21 finished earlier, 0 to run" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert again["table"] == data["table"]


def test_train_then_eval_reproduces_the_test_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "numbering-smoke", "model.name=bilstm", "--out", str(run), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run / "best.pt"), "--no-progress"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["metrics"] == summary["test"] and evaluated["step"] == summary["best_step"]
    # an existing run is not silently overwritten
    assert main(["train", "numbering-smoke", "model.name=bilstm", "--out", str(run), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_a_run_started_elsewhere_before_the_lock_is_taken_is_not_overwritten(tmp_path, capsys, monkeypatch):
    """``train`` checks for an earlier run again under the folder's lock: a run another process began
    between the first check and the lock is refused, not overwritten."""
    run = tmp_path / "run"
    real_hold = train_module.hold_run_folder

    @contextlib.contextmanager
    def started_meanwhile(run_dir):
        (Path(run_dir) / "last.pt").write_bytes(b"another process's checkpoint")
        with real_hold(run_dir) as held:
            yield held

    monkeypatch.setattr(train_module, "hold_run_folder", started_meanwhile)
    assert main(["train", "numbering-smoke", "model.name=bilstm", "--out", str(run), "--no-progress"]) == 2
    assert "already holds a run (last.pt)" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == b"another process's checkpoint" and not (run / "metrics.jsonl").exists()


def test_overrides_are_checked(tmp_path, capsys):
    assert main(["train", "numbering-smoke", "train.stepz=3", "--out", str(tmp_path)]) == 2
    assert "unknown config key 'train.stepz'" in capsys.readouterr().err
    assert main(["train", "numbering-smoke", "--out", str(tmp_path), "train.steps=abc"]) == 2
    assert "'train.steps': expected int" in capsys.readouterr().err


def test_a_bad_malloc_setting_is_an_error_naming_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("IDSPN_MALLOC", "tcmalloc")
    assert main(["list"]) == 2
    assert "IDSPN_MALLOC must be one of keep, system, got 'tcmalloc'" in capsys.readouterr().err


def test_data_commands_plug_in_through_the_registry(monkeypatch, capsys):
    seen = {}

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--count", type=int, default=1)

    def run(args: argparse.Namespace) -> int:
        seen["count"] = args.count
        return 0

    monkeypatch.setitem(registry.DATA_COMMANDS, "fake-data", DataCommand("fake-data", "a test", add_arguments, run))
    assert main(["data", "fake-data", "--count", "3"]) == 0 and seen == {"count": 3}
    assert main(["list"]) == 0
    assert "fake-data" in capsys.readouterr().out
