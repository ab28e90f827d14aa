"""Running a reproduction: its missing runs, inline, in a pool of worker processes or on SLURM.

``run_reproduction`` takes the manifest of a :class:`~idspn_experiments.runs.plan.Reproduction` at
one budget (every planned run for every seed, each in its folder ``OUT/runs/<id>/``) and:

* skips every run whose ``result.json`` exists (after checking that its config is the planned one),
  so running the same command again finishes only the missing runs;
* continues an unfinished run from its last checkpoint (``fit(resume="auto")``: a resumed run ends
  exactly like an uninterrupted one);
* decides and trains each run under the run folder's lock (``hold_run_folder`` holds
  ``runs/<id>/.lock`` while it checks that the run is unfinished and trains it), so two processes
  sharing ``OUT`` never train the same run: a run held elsewhere is reported and left to its
  holder, a run finished elsewhere a moment ago is skipped, and each process goes on with the others;
* executes the missing runs in this process (``workers=1``, the default), in a pool of
  ``workers`` local processes with ``cores // workers`` torch threads each, longest first
  (``Reproduction.cost``), or as a SLURM job array through submitit (``executor="slurm"``, an
  optional dependency imported only then), without any change to the experiment;
* logs one line per finished run: runs done / total, how many are running, and the time left,
  estimated from the cost of the runs still to do and the throughput so far;
* rewrites ``manifest.json``, ``results.json`` and ``results.md`` from every finished run in the
  folder (its own and those of other processes) after every run, under the folder's lock
  (``OUT/.lock``), and calls the reproduction's ``report`` (figures, extra tables) at the end. A run
  that fails is logged, its traceback kept in ``runs/<id>/error.txt``, and retried by the next call.

Killing it (or a worker) leaves finished runs finished and unfinished runs resumable. Workers of a
killed local pool notice that their parent is gone and exit. Under ``torchrun`` the runs are trained
one after the other by all processes together (data parallel); keep one such job per folder.
"""

from __future__ import annotations

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
from typing import Any

import torch

from idspn_experiments.engine.checkpoint import CorruptCheckpoint, load_checkpoint
from idspn_experiments.engine.config import config_from_dict
from idspn_experiments.engine.distributed import is_main_process
from idspn_experiments.engine.io import atomic_write_json, atomic_write_text, exclusive_lock, writable_folder
from idspn_experiments.engine.train import RunInUse, RunResult, fit, hold_run_folder, load_run_result
from idspn_experiments.runs.plan import PlannedRun, Reproduction, finished_run, plan_runs, run_record
from idspn_experiments.runs.results import RunRecord, format_duration, write_results

__all__ = [
    "EXECUTORS",
    "RunTask",
    "RunOutcome",
    "execute_run",
    "run_reproduction",
    "worker_threads",
    "parse_slurm_options",
]

EXECUTORS = ("local", "slurm")


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


# --- one run -----------------------------------------------------------------------------------


def _checkpoint_step(run_dir: Path) -> int:
    try:
        return int(load_checkpoint(run_dir / "last.pt", mmap=True)["step"]) if (run_dir / "last.pt").exists() else 0
    except (CorruptCheckpoint, KeyError):
        return 0


def execute_run(task: RunTask) -> RunOutcome:
    """Train one run to completion, unless it finished earlier or another process holds it.

    Runs in the calling process, a pool worker or a SLURM job. Exceptions from training are caught,
    written to ``run_dir/error.txt`` and returned as a "failed" outcome.
    """
    from idspn_experiments.registry import get_experiment  # the registry imports every experiment

    started = time.perf_counter()
    if task.threads is not None:
        torch.set_num_threads(task.threads)
    experiment = get_experiment(task.experiment)
    cfg = config_from_dict(experiment.config_type, task.config)
    run_dir = Path(task.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with hold_run_folder(run_dir):  # a run that another process finished a moment ago is seen as finished
            done = load_run_result(run_dir)
            if done is not None:
                return RunOutcome("skipped", done.to_dict(), 0, time.perf_counter() - started)
            resumed_from = _checkpoint_step(run_dir)
            result = fit(experiment, cfg, run_dir, resume="auto", progress=task.progress, held=True)
    except RunInUse:
        return RunOutcome("busy", None, 0, time.perf_counter() - started)
    except Exception as err:  # a failed run must not stop the others; the next call retries it
        atomic_write_text(run_dir / "error.txt", traceback.format_exc())
        return RunOutcome("failed", None, 0, time.perf_counter() - started, f"{type(err).__name__}: {err}")
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


OnOutcome = Callable[[PlannedRun, RunOutcome], None]


def _lost(task: RunTask, message: str) -> RunOutcome:
    """The outcome of a task whose worker or job died before it could report; noted in error.txt."""
    run_dir = Path(task.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "error.txt", message + "\n")
    return RunOutcome("failed", None, 0, 0.0, message)


def _run_in_process(pending: list[PlannedRun], tasks: dict[str, RunTask], on_outcome: OnOutcome) -> None:
    for run in pending:
        on_outcome(run, execute_run(tasks[run.id]))


def _run_pool(pending: list[PlannedRun], tasks: dict[str, RunTask], workers: int, on_outcome: OnOutcome) -> None:
    context = mp.get_context("spawn")  # fresh interpreters: no inherited torch thread pools or locks
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),)
    ) as pool:
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


def _run_slurm(
    pending: list[PlannedRun],
    tasks: dict[str, RunTask],
    out_dir: Path,
    workers: int,
    options: dict[str, Any],
    on_outcome: OnOutcome,
    log: Callable[[str], None],
    poll_s: float = 10.0,
) -> None:
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
    log(
        f"submitted {len(jobs)} runs to {executor.cluster} (at most {options['slurm_array_parallelism']} at once); "
        f"job logs in {out_dir / 'slurm'}. Stopping this command leaves the jobs running: run it again to collect."
    )
    waiting = dict(zip(jobs, pending, strict=True))
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


# --- progress ---------------------------------------------------------------------------------


class _Progress:
    """Runs done / total and the time left: cost still to do / throughput (cost per wall second).

    The throughput is measured on the runs finished in this sweep; before the first one finishes
    it is guessed from the recorded wall times of runs finished earlier, times the parallelism.
    """

    def __init__(
        self,
        total: int,
        done: int,
        pending: list[PlannedRun],
        parallel: int,
        earlier_cost: float,
        earlier_wall_s: float,
    ) -> None:
        self.total, self.done = total, done
        self.cost_left = sum(r.cost for r in pending)
        self.in_flight = len(pending)
        self.parallel = parallel
        self.started = time.perf_counter()
        self.cost_done = 0.0
        self.guess = parallel * earlier_cost / earlier_wall_s if earlier_cost > 0 and earlier_wall_s > 0 else None

    def update(self, run: PlannedRun, counted: bool) -> str:
        self.in_flight -= 1
        self.cost_left -= run.cost
        if counted:
            self.done += 1
            self.cost_done += run.cost
        elapsed = time.perf_counter() - self.started
        rate = self.cost_done / elapsed if self.cost_done > 0 else self.guess
        running = min(self.parallel, self.in_flight)
        left = (
            "done"
            if self.in_flight == 0
            else (f"~{format_duration(self.cost_left / rate)} left" if rate else "time left unknown yet")
        )
        return f"{self.done}/{self.total} done, {running} running, {left}"


# --- the runner ---------------------------------------------------------------------------------


def _write_manifest(
    out_dir: Path, reproduction: Reproduction, budget: str, runs: Sequence[PlannedRun], status: dict[str, str]
) -> None:
    atomic_write_json(
        out_dir / "manifest.json",
        {
            "reproduction": reproduction.name,
            "budget": budget,
            "runs": [
                {
                    "id": r.id,
                    "row": r.row,
                    "column": r.column,
                    "seed": r.seed,
                    "config_hash": r.config_hash,
                    "cost": r.cost,
                    "status": status.get(r.id, "missing"),
                }
                for r in runs
            ],
        },
    )


def _finished_records(out_dir: Path, runs: Sequence[PlannedRun], budget: str) -> dict[str, RunRecord]:
    """Every run of the manifest that is finished on disk (by this process or another)."""
    records = {}
    for run in runs:
        run_dir = out_dir / "runs" / run.id
        done = finished_run(run_dir, run.config)
        if done is not None:
            records[run.id] = run_record(run, budget, run_dir, done)
    return records


def _seeds_in_folder(out_dir: Path, keys: set[str]) -> set[int]:
    """The seeds of the run folders ``out_dir/runs/<key>/seed<seed>`` present for any of ``keys``."""
    seeds = set()
    for key in keys:
        for path in (out_dir / "runs" / key).glob("seed*"):
            suffix = path.name[len("seed") :]
            if path.is_dir() and suffix.isdigit():
                seeds.add(int(suffix))
    return seeds


def _is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _run_distributed(
    runs: Sequence[PlannedRun],
    tasks: dict[str, RunTask],
    progress: bool,
    on_outcome: Callable[[PlannedRun, RunOutcome], None],
) -> None:
    """Under torchrun: every process trains every run together (rank 0 writes)."""
    from idspn_experiments.registry import get_experiment

    for run in runs:
        task = tasks[run.id]
        experiment = get_experiment(task.experiment)
        started = time.perf_counter()
        result = fit(
            experiment,
            config_from_dict(experiment.config_type, task.config),
            Path(task.run_dir),
            resume=True,
            progress=progress,
        )
        assert result is not None
        on_outcome(run, RunOutcome("finished", result.to_dict(), 0, time.perf_counter() - started))


def run_reproduction(
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
        The records of the finished runs among the selected ones (``rows``, ``seeds``), seed-major
        in plan order. The manifest and the tables cover every row and every seed in the folder.

    Raises:
        ValueError: for an unknown budget, executor or row, a non-positive ``workers``, SLURM
            options without the SLURM executor, a pool under torchrun, an ``out_dir`` that cannot
            be written, or a finished run in ``out_dir`` whose config differs from the plan.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if slurm and executor != "slurm":
        raise ValueError("SLURM options (--slurm) need executor='slurm' (--executor slurm)")
    distributed = _is_distributed()
    if distributed and (workers > 1 or executor != "local"):
        raise ValueError(
            "under torchrun the runs train one after the other in the torchrun processes; drop --workers and --executor"
        )
    runs = plan_runs(reproduction, budget, seeds, rows)
    seeds = tuple(reproduction.seeds[budget] if seeds is None else seeds)
    out_dir = writable_folder(out_dir, "--out")
    note = reproduction.notes.get(budget, "")
    main = is_main_process()
    status: dict[str, str] = {}
    records = _finished_records(out_dir, runs, budget)
    status.update(dict.fromkeys(records, "finished"))
    pending = [run for run in runs if run.id not in records]
    earlier_cost = sum(r.cost for r in runs if r.id in records)
    earlier_wall = sum(records[r.id].wall_time_s for r in runs if r.id in records)
    every_row = {seeds: plan_runs(reproduction, budget, seeds) if rows else runs}  # the table's runs, by seeds
    keys = {r.key for r in every_row[seeds]}

    def publish(final: bool = False) -> None:
        """Rewrite the folder's shared files from every finished run on disk, under its lock: every
        row, and every seed run here or found in the folder, so that calls with other ``rows`` or
        ``seeds`` (other machines) add to the table instead of replacing it."""
        if not main:
            return
        with exclusive_lock(out_dir / ".lock"):
            shown_seeds = tuple(sorted(set(seeds) | _seeds_in_folder(out_dir, keys)))
            if shown_seeds not in every_row:  # planned once per set of seeds, not at every publish
                every_row[shown_seeds] = plan_runs(reproduction, budget, shown_seeds)
            shown = every_row[shown_seeds]
            finished = _finished_records(out_dir, shown, budget)
            records.update((r.id, finished[r.id]) for r in runs if r.id in finished)
            status.update(dict.fromkeys(finished, "finished"))
            ordered = [finished[r.id] for r in shown if r.id in finished]
            _write_manifest(out_dir, reproduction, budget, shown, status)
            write_results(out_dir, reproduction.name, reproduction.table, ordered, budget, shown_seeds, note)
            if final and reproduction.report is not None:
                reproduction.report(out_dir, ordered, budget, shown_seeds)

    publish()
    log(
        f"{reproduction.name} ({budget}): {len(runs)} runs, {len(records)} finished earlier, {len(pending)} to run"
        + ("" if not pending else f" ({executor}, {workers} at once)")
    )
    tracker = _Progress(
        len(runs), len(records), pending, min(workers, max(1, len(pending))), earlier_cost, earlier_wall
    )
    failures: list[str] = []

    def on_outcome(run: PlannedRun, outcome: RunOutcome) -> None:
        run_dir = out_dir / "runs" / run.id
        if outcome.result is not None:  # "finished" now or "skipped" (finished by another process meanwhile)
            result = RunResult(**outcome.result)
            records[run.id] = run_record(run, budget, run_dir, result)
            status[run.id] = "finished"
            start = f", resumed from step {outcome.resumed_from}" if outcome.resumed_from else ""
            what = (
                f"trained in {format_duration(outcome.seconds)} ({result.step_time_s:.3f} s/step{start})"
                if outcome.status == "finished"
                else "finished meanwhile, skipped"
            )
        elif outcome.status == "busy":
            status[run.id] = "busy"
            what = "locked by another process (running elsewhere), left to it"
        else:
            status[run.id] = "failed"
            failures.append(run.id)
            what = f"FAILED: {outcome.error} (details in {run_dir / 'error.txt'})"
        publish()
        log(f"[{tracker.update(run, outcome.result is not None)}] {run.id}: {what}")

    by_cost = sorted(pending, key=lambda r: -r.cost)  # longest first: the pool finishes sooner
    threads = None if workers == 1 and executor == "local" else worker_threads(workers)
    tasks = {
        run.id: RunTask(
            reproduction.experiment.name, run.config, str(out_dir / "runs" / run.id), threads, progress and workers == 1
        )
        for run in pending
    }
    if pending:
        if distributed:
            _run_distributed(pending, tasks, progress, on_outcome)
        elif executor == "slurm":
            _run_slurm(by_cost, tasks, out_dir, workers, slurm or {}, on_outcome, log)
        elif workers == 1:
            _run_in_process(pending, tasks, on_outcome)
        else:
            _run_pool(by_cost, tasks, workers, on_outcome)
    publish(final=True)
    ordered = [records[r.id] for r in runs if r.id in records]
    missing = len(runs) - len(ordered)
    if missing:
        busy = sum(1 for r in runs if status.get(r.id) == "busy")
        log(
            f"{missing} of {len(runs)} runs are not finished ({len(failures)} failed, {busy} running elsewhere); "
            "run the same command again to finish them"
        )
    return ordered
