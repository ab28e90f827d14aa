"""Reproducing a paper table: a plan of runs per budget, run idempotently into one folder.

A :class:`Reproduction` names an experiment, the paper table it reproduces and, per budget, the
runs of one seed (:class:`RunPlan`: a preset plus ``key=value`` overrides). ``run_reproduction``
trains every (run, seed) into ``OUT/runs/<key>/seed<seed>/``, skipping runs whose ``result.json``
exists with the same config (so running it again continues where it stopped), and rewrites
``OUT/results.json`` and ``OUT/results.md`` after every run.

Budgets:
    ``smoke``: seconds, for CI; numbers are meaningless.
    ``small``: sized for a 2-core CPU in about an hour per seed; usually a shrunken task, labelled
        as not comparable to the paper's cells.
    ``paper``: the paper's hyperparameters and seeds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from idspn.experiments.config import config_diff, config_to_dict, load_config
from idspn.experiments.engine import RunResult, fit, load_run_result
from idspn.experiments.results import ResultsTable, RunRecord, write_results
from idspn.experiments.spec import Experiment

__all__ = ["BUDGETS", "Budget", "RunPlan", "Reproduction", "run_reproduction"]

Budget = Literal["smoke", "small", "paper"]
BUDGETS: tuple[str, ...] = ("smoke", "small", "paper")


@dataclass(frozen=True)
class RunPlan:
    """One run of a reproduction, for every seed."""

    key: str  # unique folder name under runs/ (e.g. "c4/idspn/1x"); equal keys share runs across reproductions
    row: str  # table row key
    column: str  # table column key
    preset: str  # base preset name
    overrides: tuple[str, ...] = ()  # key=value overrides applied to the preset


@dataclass(frozen=True)
class Reproduction:
    """How to reproduce one paper table."""

    name: str  # `idspn reproduce <name>`
    experiment: Experiment[Any]  # the experiment every run belongs to
    table: ResultsTable  # layout and published numbers
    plan: Callable[[str], list[RunPlan]]  # budget -> the runs of one seed
    seeds: dict[str, tuple[int, ...]]  # default seeds per budget
    notes: dict[str, str] = field(default_factory=dict)  # per budget: printed above the table
    description: str = ""  # one line for `idspn list`
    # Optional extra outputs (figures, further tables) written into the output folder after the
    # results: (out_dir, finished records, budget, seeds) -> anything (ignored).
    report: Callable[[Path, Sequence[RunRecord], str, Sequence[int]], object] | None = None
    # Optional relative cost of a run from its config, for sweeps (idspn/experiments/sweep.py):
    # longest runs first and the time-left estimate. None: train.steps.
    cost: Callable[[Any], float] | None = None


def select_plan(
    reproduction: Reproduction, budget: str, seeds: Sequence[int] | None, rows: Sequence[str] | None
) -> tuple[tuple[int, ...], list[Any]]:
    """The seeds and planned runs of ``reproduction`` at ``budget``, restricted to ``rows``.

    Raises:
        ValueError: for an unknown budget or row.
    """
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    plan = reproduction.plan(budget)
    if rows is not None:
        unknown = set(rows) - {p.row for p in plan}
        if unknown:
            raise ValueError(f"unknown rows {sorted(unknown)}; known: {sorted({p.row for p in plan})}")
        plan = [p for p in plan if p.row in rows]
    return tuple(reproduction.seeds[budget] if seeds is None else seeds), plan


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def finished_run(run_dir: Path, config: dict[str, Any]) -> RunResult | None:
    """The result of the finished run in ``run_dir``, or None; an error if it ran another config."""
    done = load_run_result(run_dir)
    if done is not None:
        diff = config_diff(done.config, config)
        if diff:
            raise ValueError(f"{run_dir} holds a finished run with another config ({'; '.join(diff)}); "
                             "choose another --out")
    return done


class _TablePlace(Protocol):
    """Where a run's numbers go: a ``RunPlan`` or a sweep's ``SweepRun``."""

    key: str
    row: str
    column: str


def run_record(run: _TablePlace, seed: int, budget: str, run_dir: Path, result: RunResult) -> RunRecord:
    """The results-table record of one run of ``run`` (its key, row and column) for ``seed``."""
    return RunRecord(
        key=run.key, row=run.row, column=run.column, seed=seed, budget=budget, run_dir=str(run_dir),
        val=result.val, test=result.test, steps=result.steps, best_step=result.best_step,
        wall_time_s=result.wall_time_s, step_time_s=result.step_time_s, world_size=result.world_size,
        device=result.device,
    )


def run_reproduction(
    reproduction: Reproduction,
    budget: str,
    out_dir: str | Path,
    seeds: Sequence[int] | None = None,
    resume: bool = False,
    progress: bool = True,
    rows: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> list[RunRecord]:
    """Train (or skip, when finished) every planned run for every seed and write the results.

    Args:
        reproduction: what to reproduce.
        budget: "smoke" | "small" | "paper".
        out_dir: output folder; running again with the same folder skips finished runs.
        seeds: seeds to run (default: the reproduction's seeds for the budget).
        resume: continue unfinished runs from their last checkpoint (otherwise they restart).
        progress: tqdm progress bars.
        rows: run only these table rows (default: all).
        log: where one-line status messages go.

    Returns:
        The records of all planned runs that are finished, in plan order.

    Raises:
        ValueError: for an unknown budget or row, or if a finished run in ``out_dir`` has a
            different config than planned (use another ``out_dir``).
    """
    seeds, plan = select_plan(reproduction, budget, seeds, rows)
    out_dir = Path(out_dir)
    experiment = reproduction.experiment
    note = reproduction.notes.get(budget, "")
    records: list[RunRecord] = []
    total = len(seeds) * len(plan)
    for seed in seeds:
        for run in plan:
            cfg = load_config(experiment.config_type, run.preset, [*run.overrides, f"seed={seed}"])
            run_dir = out_dir / "runs" / run.key / f"seed{seed}"
            done = finished_run(run_dir, config_to_dict(cfg))
            if done is not None:
                log(f"[{len(records) + 1}/{total}] {run.key} seed {seed}: finished earlier, skipped")
                result = done
            else:
                log(f"[{len(records) + 1}/{total}] {run.key} seed {seed}: training in {run_dir}")
                result = fit(experiment, cfg, run_dir, resume=resume, progress=progress)
                assert result is not None  # fit returns None only with stop_at_step
            records.append(run_record(run, seed, budget, run_dir, result))
            if _is_main():
                write_results(out_dir, reproduction.name, reproduction.table, records, budget, seeds, note)
    if _is_main():
        write_results(out_dir, reproduction.name, reproduction.table, records, budget, seeds, note)
        if reproduction.report is not None:
            reproduction.report(out_dir, records, budget, seeds)
    return records
