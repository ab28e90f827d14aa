import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from idspn_experiments.autoencoding.tables import AUTOENCODING_REPRODUCTION
from idspn_experiments.engine.config import config_from_dict
from idspn_experiments.engine.io import exclusive_lock
from idspn_experiments.engine.train import fit, load_run_result
from idspn_experiments.registry import get_experiment
from idspn_experiments.runs import executors
from idspn_experiments.runs.executors import (
    RunTask,
    execute_run,
    parse_slurm_options,
    run_reproduction,
    worker_threads,
)
from idspn_experiments.runs.plan import plan_runs

ROWS = ["n2/idspn-mom/it10", "n2/dspn/it10"]  # 4 smoke runs: (n, d) = (2, 2) and (2, 4)
QUIET = dataclasses.replace(AUTOENCODING_REPRODUCTION, report=None)  # figures are tested with the reproduction


def _sweep(out, log, **kwargs):
    return run_reproduction(
        QUIET, "smoke", out, rows=kwargs.pop("rows", ROWS), progress=False, log=log.append, **kwargs
    )


def _task(run, out):
    return RunTask("autoencoding", run.config, str(out / "runs" / run.id))


def test_manifest_ids_are_stable_and_unique():
    runs = plan_runs(AUTOENCODING_REPRODUCTION, "smoke", seeds=(0, 3))
    assert len(runs) == 2 * 16 and len({r.id for r in runs}) == 32
    assert runs[0].id == "n2-d2/idspn-mom/it10/seed0" and runs[16].id == "n2-d2/idspn-mom/it10/seed3"
    again = plan_runs(AUTOENCODING_REPRODUCTION, "smoke", seeds=(0, 3))
    assert [(r.id, r.config_hash) for r in again] == [(r.id, r.config_hash) for r in runs]
    assert runs[0].config["seed"] == 0 and runs[16].config["seed"] == 3 and runs[0].config_hash != runs[16].config_hash
    # a run's id names its configuration, not its position: a sub-grid has the same ids
    subset = plan_runs(AUTOENCODING_REPRODUCTION, "smoke", seeds=(3,), rows=ROWS)
    assert {r.id: r.config_hash for r in subset}.items() <= {r.id: r.config_hash for r in runs}.items()
    with pytest.raises(ValueError, match="unknown rows"):
        plan_runs(AUTOENCODING_REPRODUCTION, "smoke", rows=["n3/dspn/it10"])


def test_rerun_skips_finished_runs(tmp_path):
    log = []
    records = _sweep(tmp_path, log)
    assert len(records) == 4 and all(r.test["loss"] > 0 for r in records)
    assert "4 runs, 0 finished earlier, 4 to run" in log[0]
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/**/result.json")}
    assert len(stamps) == 4
    log.clear()
    again = _sweep(tmp_path, log)
    assert "4 runs, 4 finished earlier, 0 to run" in log[0] and len(log) == 1
    assert [r.test for r in again] == [r.test for r in records]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/**/result.json")} == stamps
    manifest = json.loads((tmp_path / "manifest.json").read_text())  # the whole table: every row
    selected = {run.id for run in plan_runs(QUIET, "smoke", rows=ROWS)}
    assert len(manifest["runs"]) == 16
    assert [r["status"] for r in manifest["runs"] if r["id"] in selected] == ["finished"] * 4
    assert {r["status"] for r in manifest["runs"] if r["id"] not in selected} == {"missing"}
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["runs"]) == 4 and results["reproduction"] == "autoencoding"


def test_calls_with_other_rows_or_seeds_add_to_the_tables_instead_of_replacing_them(tmp_path):
    # Two machines share a reproduction folder with --rows (and --seeds): the shared files show both.
    # Finished runs are faked (a result.json of the planned config), so nothing trains.
    from idspn_experiments.engine.io import atomic_write_json
    from idspn_experiments.engine.train import RunResult

    for run in plan_runs(QUIET, "smoke", seeds=(0, 1)):
        result = RunResult("autoencoding", run.config, 6, 6, {"loss": 0.5}, {"loss": 0.5}, 1.0, 1.0, 0.1, 1, "cpu")
        atomic_write_json(tmp_path / "runs" / run.id / "result.json", result.to_dict())
    log = []
    run_reproduction(QUIET, "smoke", tmp_path, rows=ROWS[:1], progress=False, log=log.append)
    run_reproduction(QUIET, "smoke", tmp_path, rows=ROWS[1:], seeds=(1,), progress=False, log=log.append)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["seeds"] == [0, 1] and len(results["runs"]) == 2 * 16  # every row, both seeds
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["runs"]) == 2 * 16 and {r["status"] for r in manifest["runs"]} == {"finished"}
    assert all("2 runs, 2 finished earlier, 0 to run" in line for line in log)  # each trained nothing


def test_killed_sweep_runs_only_the_missing_runs_and_resumes_the_interrupted_one(tmp_path):
    runs = plan_runs(AUTOENCODING_REPRODUCTION, "smoke", rows=ROWS)
    experiment = get_experiment("autoencoding")
    # the state a kill leaves: one run finished, one stopped after its checkpoint at step 2, two not started
    assert execute_run(_task(runs[0], tmp_path)).status == "finished"
    interrupted = config_from_dict(experiment.config_type, runs[1].config)
    assert fit(experiment, interrupted, tmp_path / "runs" / runs[1].id, progress=False, stop_at_step=2) is None
    finished_stamp = (tmp_path / "runs" / runs[0].id / "result.json").stat().st_mtime_ns

    log = []
    records = _sweep(tmp_path, log)
    assert "4 runs, 1 finished earlier, 3 to run" in log[0]
    trained = [line for line in log if "trained in" in line]
    assert len(trained) == 3 and not any(runs[0].id in line for line in trained)
    assert [line for line in trained if runs[1].id in line][0].count("resumed from step 2") == 1
    assert (tmp_path / "runs" / runs[0].id / "result.json").stat().st_mtime_ns == finished_stamp
    assert len(records) == 4
    # the resumed run ends exactly like an uninterrupted one
    whole = fit(experiment, interrupted, tmp_path / "uninterrupted", progress=False)
    assert load_run_result(tmp_path / "runs" / runs[1].id).test == whole.test


def test_a_locked_run_is_left_to_its_holder(tmp_path):
    runs = plan_runs(AUTOENCODING_REPRODUCTION, "smoke", rows=ROWS)
    held = tmp_path / "runs" / runs[2].id
    held.mkdir(parents=True)
    log = []
    with exclusive_lock(held / ".lock", wait=False) as acquired:
        assert acquired
        records = _sweep(tmp_path, log)
    assert len(records) == 3 and any("locked by another process" in line and runs[2].id in line for line in log)
    assert "not finished" in log[-1]
    status = {r["id"]: r["status"] for r in json.loads((tmp_path / "manifest.json").read_text())["runs"]}
    assert status[runs[2].id] == "busy" and list(status.values()).count("finished") == 3
    log.clear()
    assert len(_sweep(tmp_path, log)) == 4 and "1 to run" in log[0]


def test_a_run_finished_elsewhere_just_before_its_lock_is_taken_is_skipped(tmp_path, monkeypatch):
    """Whether a run is finished is read under the run's lock: a process that finishes the run
    between another's planning and its lock does not get the run trained a second time."""
    run = plan_runs(AUTOENCODING_REPRODUCTION, "smoke", rows=ROWS)[0]
    task = _task(run, tmp_path)
    experiment = get_experiment("autoencoding")
    real_hold, real_result = executors.hold_run_folder, executors.load_run_result

    @contextlib.contextmanager
    def finished_meanwhile(run_dir):
        fit(experiment, config_from_dict(experiment.config_type, run.config), run_dir, progress=False)
        with real_hold(run_dir) as held:
            yield held

    def result_under_the_lock(run_dir):
        with exclusive_lock(Path(run_dir) / ".lock", wait=False) as free:
            assert not free, "the run's result was read without holding its lock"
        return real_result(run_dir)

    monkeypatch.setattr(executors, "hold_run_folder", finished_meanwhile)
    monkeypatch.setattr(executors, "load_run_result", result_under_the_lock)
    outcome = execute_run(task)
    assert outcome.status == "skipped" and outcome.result == load_run_result(task.run_dir).to_dict()


def test_a_failed_run_is_reported_and_retried(tmp_path, monkeypatch):
    runs = plan_runs(AUTOENCODING_REPRODUCTION, "smoke", rows=ROWS)
    real_fit = executors.fit

    def failing_fit(experiment, cfg, run_dir, **kwargs):
        if str(run_dir).endswith(runs[3].id):
            raise FloatingPointError("diverged")
        return real_fit(experiment, cfg, run_dir, **kwargs)

    monkeypatch.setattr(executors, "fit", failing_fit)
    log = []
    assert len(_sweep(tmp_path, log)) == 3
    assert any("FAILED: FloatingPointError: diverged" in line for line in log)
    error = tmp_path / "runs" / runs[3].id / "error.txt"
    assert "Traceback" in error.read_text()
    monkeypatch.setattr(executors, "fit", real_fit)
    log.clear()
    assert len(_sweep(tmp_path, log)) == 4 and not error.exists()


def test_a_finished_run_with_another_config_is_not_reused(tmp_path):
    log = []
    _sweep(tmp_path, log, rows=ROWS[:1])
    result = next(tmp_path.glob("runs/**/result.json"))
    data = json.loads(result.read_text())
    data["config"]["train"]["steps"] = 99
    result.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="another config"):
        _sweep(tmp_path, log, rows=ROWS[:1])


def test_options_and_threads(monkeypatch):
    assert parse_slurm_options(
        ["partition=gpu", "timeout_min=120", "mem_gb=7.5", "slurm_qos=high", "cluster=local"]
    ) == {"slurm_partition": "gpu", "timeout_min": 120, "mem_gb": 7.5, "slurm_qos": "high", "cluster": "local"}
    with pytest.raises(ValueError, match="key=value"):
        parse_slurm_options(["partition"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert worker_threads(1) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    cores = len(os.sched_getaffinity(0))
    assert worker_threads(1) == cores and worker_threads(2 * cores) == 1 and worker_threads(2) * 2 <= max(2, cores)
    with pytest.raises(ValueError, match="workers"):
        run_reproduction(AUTOENCODING_REPRODUCTION, "smoke", "unused", workers=0)
    with pytest.raises(ValueError, match="executor"):
        run_reproduction(AUTOENCODING_REPRODUCTION, "smoke", "unused", executor="ray")


def test_slurm_executor_through_submitit(tmp_path):
    pytest.importorskip("submitit")
    log = []
    records = _sweep(tmp_path, log, executor="slurm", slurm={"cluster": "debug"}, workers=2)
    assert len(records) == 4 and any("submitted 4 runs to debug" in line for line in log)


_SLOW_SWEEP = textwrap.dedent("""
    import dataclasses, sys
    from idspn_experiments.autoencoding.tables import AUTOENCODING_REPRODUCTION
    from idspn_experiments.runs.plan import RunPlan
    from idspn_experiments.runs.executors import run_reproduction

    def plan(budget):
        return [RunPlan(p.key, p.row, p.column, p.preset, p.overrides + ("train.steps=30",))
                for p in AUTOENCODING_REPRODUCTION.plan("smoke")[:4]]

    SLOW = dataclasses.replace(AUTOENCODING_REPRODUCTION, plan=plan, report=None)

    if __name__ == "__main__":
        workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
        run_reproduction(SLOW, "smoke", sys.argv[1], workers=workers, progress=False)
""")


def _children(pid):
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to find the worker processes")
def test_killing_a_pool_sweep_stops_its_workers_and_a_rerun_finishes_the_rest(tmp_path):
    script = tmp_path / "slow_sweep.py"
    script.write_text(_SLOW_SWEEP)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep_process = subprocess.Popen(
        [sys.executable, str(script), str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not list(out.glob("runs/**/result.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = [p for p in _children(sweep_process.pid) if _alive(p)]
    sweep_process.send_signal(signal.SIGKILL)
    sweep_process.wait()
    done_at_kill = {p.parent for p in out.glob("runs/**/result.json")}
    assert done_at_kill, "no run finished within 60 s"
    assert workers, "the sweep started no worker processes"
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), "workers outlived the killed sweep"

    sys.path.insert(0, str(tmp_path))
    try:
        from slow_sweep import SLOW
    finally:
        sys.path.remove(str(tmp_path))
    done_now = {p.parent for p in out.glob("runs/**/result.json")}
    log = []
    records = run_reproduction(SLOW, "smoke", out, progress=False, log=log.append)
    assert f"4 runs, {len(done_now)} finished earlier, {4 - len(done_now)} to run" in log[0]
    assert len(records) == 4 and all((Path(r.run_dir) / "result.json").exists() for r in records)


def test_two_reproductions_into_one_folder_train_each_run_once(tmp_path):
    """Two processes started together on one --out: no run is trained twice, both end with every
    run finished, and the shared files hold all four runs."""
    script = tmp_path / "slow_sweep.py"
    script.write_text(_SLOW_SWEEP)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(out), "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], logs
    trained = [line.split("] ")[1].split(":")[0] for log in logs for line in log.splitlines() if "trained in" in line]
    assert len(trained) == len(set(trained)) == 4, logs  # every run trained exactly once, by one of them
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 4
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["finished"] * 4
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("last.pt.prev"))
