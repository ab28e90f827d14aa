"""Sweeps: the runs of a reproduction as a manifest, run by a pool of worker processes or on SLURM.

A sweep is the manifest of a :class:`~idspn.experiments.reproduce.Reproduction` at one budget:
every planned run for every seed, each with a stable id ``<plan key>/seed<seed>`` that is also its
folder ``OUT/runs/<id>/`` (the same folders ``run_reproduction`` uses, so both can fill the same
``OUT``). Running a sweep:

* skips every run whose ``result.json`` exists (after checking that its config is the planned one),
  so running the same command again finishes only the missing runs;
* continues an unfinished run from its last checkpoint (``fit(resume=True)``: a resumed run ends
  exactly like an uninterrupted one);
* trains each run under an exclusive lock on ``runs/<id>/.lock``, released by the kernel when its
  holder dies, so two sweeps sharing ``OUT`` never train the same run at once (a locked run is
  reported as running elsewhere and left to its holder);
* executes the missing runs, longest first (``Reproduction.cost``), in this process
  (``workers=1``), in a pool of ``workers`` local processes with ``cores // workers`` torch threads
  each, or as a SLURM job array through submitit (``executor="slurm"``, an optional dependency
  imported only then), without any change to the experiment;
* logs one line per finished run: runs done / total, how many are running, and the time left,
  estimated from the cost of the runs still to do and the throughput so far;
* rewrites ``results.json``/``results.md`` after every finished run and calls the reproduction's
  ``report`` (figures, extra tables) at the end. A run that fails is logged, its traceback kept in
  ``runs/<id>/error.txt``, and retried by the next sweep.

Killing a sweep (or a worker) leaves finished runs finished and unfinished runs resumable.
Workers of a killed local sweep notice that their parent is gone and exit.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import torch

from idspn.experiments.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint
from idspn.experiments.config import config_from_dict, config_to_dict, load_config
from idspn.experiments.engine import RunResult, fit, load_run_result
from idspn.experiments.reproduce import Reproduction, finished_run, run_record, select_plan
from idspn.experiments.results import RunRecord, format_duration, write_results

__all__ = ["EXECUTORS", "SweepRun", "RunTask", "RunOutcome", "build_manifest", "execute_run", "run_sweep",
           "worker_threads", "parse_slurm_options"]

EXECUTORS = ("local", "slurm")


@dataclass(frozen=True)
class SweepRun:
    """One entry of the manifest: a planned run for one seed."""

    id: str  # "<plan key>/seed<seed>": stable, and the run's folder under runs/
    key: str  # plan key
    row: str  # table row key
    column: str  # table column key
    seed: int
    config: dict[str, Any]  # the run's full config
    config_hash: str  # first 12 hex digits of the SHA-256 of the config's canonical JSON
    cost: float  # relative cost (Reproduction.cost, default train.steps)


@dataclass(frozen=True)
class RunTask:
    """What a worker needs to train one run (small and picklable)."""

    experiment: str  # registered experiment name
    config: dict[str, Any]  # full config
    run_dir: str  # the run's folder
    threads: int | None = None  # torch threads for the run; None: leave as is
    progress: bool = False  # tqdm progress bar of the run


@dataclass(frozen=True)
class RunOutcome:
    """What became of a task."""

    status: str  # "finished" (trained now) | "skipped" (finished earlier) | "busy" (locked elsewhere) | "failed"
    result: dict[str, Any] | None  # RunResult as a dict for "finished" and "skipped"
    resumed_from: int  # step the run continued from (0: from scratch)
    seconds: float  # wall time spent on the task
    error: str | None = None  # last line of the traceback for "failed"


# --- the manifest ------------------------------------------------------------------------------


def _config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def build_manifest(
    reproduction: Reproduction, budget: str, seeds: Sequence[int] | None = None, rows: Sequence[str] | None = None
) -> list[SweepRun]:
    """Every planned run of ``reproduction`` at ``budget`` for every seed, seed-major in plan order.

    Raises:
        ValueError: for an unknown budget or row, or two runs with the same id.
    """
    seeds, plan = select_plan(reproduction, budget, seeds, rows)
    config_type = reproduction.experiment.config_type
    configs = [load_config(config_type, p.preset, p.overrides) for p in plan]  # the seed changes nothing else
    costs = [float(c.train.steps) if reproduction.cost is None else float(reproduction.cost(c)) for c in configs]
    runs: list[SweepRun] = []
    for seed in seeds:
        for p, cfg, cost in zip(plan, configs, costs):
            config = config_to_dict(replace(cfg, seed=seed))
            runs.append(SweepRun(f"{p.key}/seed{seed}", p.key, p.row, p.column, seed, config, _config_hash(config), cost))
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the plan of {reproduction.name!r} at budget {budget!r} repeats run keys")
    return runs


def _write_manifest(out_dir: Path, reproduction: Reproduction, budget: str, runs: Sequence[SweepRun],
                    status: dict[str, str]) -> None:
    atomic_write_json(out_dir / "manifest.json", {
        "reproduction": reproduction.name,
        "budget": budget,
        "runs": [{"id": r.id, "row": r.row, "column": r.column, "seed": r.seed, "config_hash": r.config_hash,
                  "cost": r.cost, "status": status.get(r.id, "missing")} for r in runs],
    })


# --- one run -----------------------------------------------------------------------------------


class _RunLock:
    """Non-blocking exclusive ``flock`` on a file; the kernel releases it when the holder dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: TextIO | None = None
        self.held = False

    def __enter__(self) -> bool:
        import fcntl

        self.file = self.path.open("a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.held = True
        except BlockingIOError:
            self.held = False
        return self.held

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        import fcntl

        assert self.file is not None
        if self.held:
            fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _checkpoint_step(path: Path) -> int:
    return int(load_checkpoint(path, mmap=True)["step"]) if path.exists() else 0


def execute_run(task: RunTask) -> RunOutcome:
    """Train one run to completion, unless it finished earlier or another process holds it.

    Runs in the sweep's process, a pool worker or a SLURM job. Exceptions from training are caught,
    written to ``run_dir/error.txt`` and returned as a "failed" outcome.
    """
    from idspn.experiments.registry import get_experiment  # the registry imports every experiment

    started = time.perf_counter()
    if task.threads is not None:
        torch.set_num_threads(task.threads)
    experiment = get_experiment(task.experiment)
    cfg = config_from_dict(experiment.config_type, task.config)
    run_dir = Path(task.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _RunLock(run_dir / ".lock") as held:
        if not held:
            return RunOutcome("busy", None, 0, time.perf_counter() - started)
        done = load_run_result(run_dir)
        if done is not None:
            return RunOutcome("skipped", done.to_dict(), 0, time.perf_counter() - started)
        resumed_from = _checkpoint_step(run_dir / "last.pt")
        try:
            result = fit(experiment, cfg, run_dir, resume=True, progress=task.progress)
        except Exception as err:  # a failed run must not stop the sweep; the next sweep retries it
            atomic_write_text(run_dir / "error.txt", traceback.format_exc())
            return RunOutcome("failed", None, resumed_from, time.perf_counter() - started,
                              f"{type(err).__name__}: {err}")
        assert result is not None  # fit returns None only with stop_at_step
        (run_dir / "error.txt").unlink(missing_ok=True)
        return RunOutcome("finished", result.to_dict(), resumed_from, time.perf_counter() - started)


# --- executors ---------------------------------------------------------------------------------


def worker_threads(workers: int) -> int:
    """Torch threads per worker so that ``workers x threads`` does not exceed the usable cores.

    Also capped by ``OMP_NUM_THREADS`` when set (e.g. 1 on a machine shared with other jobs).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // max(1, workers))
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(limit)) if limit.isdigit() and int(limit) > 0 else threads


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)  # the sweep is gone: stop training, the run stays resumable from its checkpoint


def _init_worker(parent: int) -> None:
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


OnOutcome = Callable[[SweepRun, RunOutcome], None]


def _lost(task: RunTask, message: str) -> RunOutcome:
    """The outcome of a task whose worker or job died before it could report; noted in error.txt."""
    run_dir = Path(task.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "error.txt", message + "\n")
    return RunOutcome("failed", None, 0, 0.0, message)


def _run_in_process(pending: list[SweepRun], tasks: dict[str, RunTask], on_outcome: OnOutcome) -> None:
    for run in pending:
        on_outcome(run, execute_run(tasks[run.id]))


def _run_pool(pending: list[SweepRun], tasks: dict[str, RunTask], workers: int, on_outcome: OnOutcome) -> None:
    context = mp.get_context("spawn")  # fresh interpreters: no inherited torch thread pools or locks
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(execute_run, tasks[run.id]): run for run in pending}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except BrokenProcessPool as err:
                outcome = _lost(tasks[futures[future].id], f"worker process died ({err})")
            on_outcome(futures[future], outcome)


def parse_slurm_options(options: Sequence[str]) -> dict[str, Any]:
    """``["partition=gpu", "timeout_min=120"]`` -> ``{"slurm_partition": "gpu", "timeout_min": 120}``.

    Values that parse as int or float become numbers. Keys submitit shares across clusters
    (``timeout_min``, ``mem_gb``, ``cpus_per_task``, ``gpus_per_node``, ``nodes``,
    ``tasks_per_node``, ``name``) and ``cluster`` stay as they are; any other key gets the
    ``slurm_`` prefix unless it has it (``partition`` -> ``slurm_partition``).

    Raises:
        ValueError: for an option that is not ``key=value``.
    """
    shared = {"timeout_min", "mem_gb", "cpus_per_task", "gpus_per_node", "nodes", "tasks_per_node", "name", "cluster"}
    out: dict[str, Any] = {}
    for option in options:
        key, sep, text = option.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm options must be key=value, got {option!r}")
        value: Any = text
        for convert in (int, float):
            try:
                value = convert(text)
                break
            except ValueError:
                continue
        if key not in shared and not key.startswith("slurm_"):
            key = "slurm_" + key
        out[key] = value
    return out


def _run_slurm(pending: list[SweepRun], tasks: dict[str, RunTask], out_dir: Path, workers: int,
               options: dict[str, Any], on_outcome: OnOutcome, log: Callable[[str], None],
               poll_s: float = 10.0) -> None:
    try:
        import submitit
    except ImportError:
        raise ValueError("executor='slurm' needs submitit: pip install 'idspn[slurm]'") from None
    options = dict(options)
    cluster = options.pop("cluster", None)
    options.setdefault("slurm_array_parallelism", workers)
    options.setdefault("cpus_per_task", 1)
    executor = submitit.AutoExecutor(folder=out_dir / "slurm" / "%j", cluster=cluster)
    executor.update_parameters(**options)
    job_tasks = [replace(tasks[run.id], threads=int(options["cpus_per_task"])) for run in pending]
    jobs = executor.map_array(execute_run, job_tasks)
    log(f"submitted {len(jobs)} runs to {executor.cluster} (at most {options['slurm_array_parallelism']} at once); "
        f"job logs in {out_dir / 'slurm'}. Stopping this command leaves the jobs running: run it again to collect.")
    waiting = dict(zip(jobs, pending))
    while waiting:
        for job in [j for j in waiting if j.done()]:
            run = waiting.pop(job)
            try:
                outcome = job.result()
            except Exception as err:  # the job itself failed (time limit, node failure, ...)
                outcome = _lost(tasks[run.id], f"job {job.job_id}: {type(err).__name__}: {err}")
            on_outcome(run, outcome)
        if waiting:
            time.sleep(poll_s)


# --- progress ----------------------------------------------------------------------------------


class _Progress:
    """Runs done / total and the time left: cost still to do / throughput (cost per wall second).

    The throughput is measured on the runs finished in this sweep; before the first one finishes
    it is guessed from the recorded wall times of runs finished earlier, times the parallelism.
    """

    def __init__(self, total: int, done: int, pending: list[SweepRun], parallel: int, earlier_cost: float,
                 earlier_wall_s: float) -> None:
        self.total, self.done = total, done
        self.cost_left = sum(r.cost for r in pending)
        self.in_flight = len(pending)
        self.parallel = parallel
        self.started = time.perf_counter()
        self.cost_done = 0.0
        self.guess = parallel * earlier_cost / earlier_wall_s if earlier_cost > 0 and earlier_wall_s > 0 else None

    def update(self, run: SweepRun, counted: bool) -> str:
        self.in_flight -= 1
        self.cost_left -= run.cost
        if counted:
            self.done += 1
            self.cost_done += run.cost
        elapsed = time.perf_counter() - self.started
        rate = self.cost_done / elapsed if self.cost_done > 0 else self.guess
        running = min(self.parallel, self.in_flight)
        left = "done" if self.in_flight == 0 else (
            f"~{format_duration(self.cost_left / rate)} left" if rate else "time left unknown yet")
        return f"{self.done}/{self.total} done, {running} running, {left}"


# --- the sweep ---------------------------------------------------------------------------------


def run_sweep(
    reproduction: Reproduction,
    budget: str,
    out_dir: str | Path,
    seeds: Sequence[int] | None = None,
    workers: int = 1,
    executor: str = "local",
    slurm: dict[str, Any] | None = None,
    rows: Sequence[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[RunRecord]:
    """Run every missing run of a reproduction's manifest and write the results and the report.

    Args:
        reproduction: what to reproduce.
        budget: "smoke" | "small" | "paper".
        out_dir: output folder: ``manifest.json``, ``results.json``, ``results.md``, ``runs/<id>/``
            and whatever ``reproduction.report`` writes.
        seeds: seeds to run (default: the reproduction's seeds for the budget).
        workers: runs at once: 1 trains in this process; more use a pool of local worker processes
            (``worker_threads(workers)`` torch threads each) or, with ``executor="slurm"``, caps
            the number of array jobs running at once.
        executor: "local" or "slurm".
        slurm: submitit parameters for ``executor="slurm"`` (see ``parse_slurm_options``);
            ``cluster="local"`` or ``"debug"`` runs the jobs on this machine through submitit.
        rows: run only these table rows (default: all).
        progress: progress bar of each run when training in this process.
        log: where the one-line status messages go.

    Returns:
        The records of all finished runs of the manifest, seed-major in plan order.

    Raises:
        ValueError: for an unknown budget, executor or row, a non-positive ``workers``, a use
            under torchrun, or a finished run in ``out_dir`` whose config differs from the plan.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("run_sweep starts its own processes; under torchrun use `idspn reproduce` without --workers")
    runs = build_manifest(reproduction, budget, seeds, rows)
    seeds = tuple(reproduction.seeds[budget] if seeds is None else seeds)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    note = reproduction.notes.get(budget, "")
    records: dict[str, RunRecord] = {}
    status: dict[str, str] = {}
    pending: list[SweepRun] = []
    earlier_cost, earlier_wall = 0.0, 0.0
    for run in runs:
        run_dir = out_dir / "runs" / run.id
        done = finished_run(run_dir, run.config)
        if done is None:
            pending.append(run)
            continue
        records[run.id] = run_record(run, run.seed, budget, run_dir, done)
        status[run.id] = "finished"
        earlier_cost, earlier_wall = earlier_cost + run.cost, earlier_wall + done.wall_time_s
    _write_manifest(out_dir, reproduction, budget, runs, status)
    log(f"{reproduction.name} ({budget}): {len(runs)} runs, {len(records)} finished earlier, {len(pending)} to run"
        + ("" if not pending else f" ({executor}, {workers} at once)"))

    def ordered() -> list[RunRecord]:
        return [records[r.id] for r in runs if r.id in records]

    tracker = _Progress(len(runs), len(records), pending, min(workers, max(1, len(pending))), earlier_cost,
                        earlier_wall)
    failures: list[str] = []

    def on_outcome(run: SweepRun, outcome: RunOutcome) -> None:
        run_dir = out_dir / "runs" / run.id
        if outcome.result is not None:  # "finished" now or "skipped" (finished by another sweep meanwhile)
            result = RunResult(**outcome.result)
            records[run.id] = run_record(run, run.seed, budget, run_dir, result)
            status[run.id] = "finished"
            write_results(out_dir, reproduction.name, reproduction.table, ordered(), budget, seeds, note)
            start = f", resumed from step {outcome.resumed_from}" if outcome.resumed_from else ""
            what = (f"trained in {format_duration(outcome.seconds)} ({result.step_time_s:.3f} s/step{start})"
                    if outcome.status == "finished" else "finished meanwhile, skipped")
        elif outcome.status == "busy":
            status[run.id] = "busy"
            what = "locked by another process (running elsewhere), left to it"
        else:
            status[run.id] = "failed"
            failures.append(run.id)
            what = f"FAILED: {outcome.error} (details in {run_dir / 'error.txt'})"
        log(f"[{tracker.update(run, outcome.result is not None)}] {run.id}: {what}")

    by_cost = sorted(pending, key=lambda r: -r.cost)  # longest first: the pool finishes sooner
    threads = None if workers == 1 and executor == "local" else worker_threads(workers)
    tasks = {run.id: RunTask(reproduction.experiment.name, run.config, str(out_dir / "runs" / run.id), threads,
                             progress and workers == 1) for run in pending}
    if pending:
        if executor == "slurm":
            _run_slurm(by_cost, tasks, out_dir, workers, slurm or {}, on_outcome, log)
        elif workers == 1:
            _run_in_process(pending, tasks, on_outcome)
        else:
            _run_pool(by_cost, tasks, workers, on_outcome)
    _write_manifest(out_dir, reproduction, budget, runs, status)
    write_results(out_dir, reproduction.name, reproduction.table, ordered(), budget, seeds, note)
    if reproduction.report is not None:
        reproduction.report(out_dir, ordered(), budget, seeds)
    missing = len(runs) - len(records)
    if missing:
        log(f"{missing} of {len(runs)} runs are not finished ({len(failures)} failed); run the same command again "
            "to retry them")
    return ordered()
