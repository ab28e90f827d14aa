"""Reproducing a paper table: a plan of runs per budget, and the manifest of one reproduction.

A :class:`Reproduction` names an experiment, the paper table it reproduces and, per budget, the
runs of one seed (:class:`RunPlan`: a preset plus ``key=value`` overrides). Its manifest at a
budget (``plan_runs``) is every planned run for every seed, each with a stable id
``<plan key>/seed<seed>`` that is also its folder ``OUT/runs/<id>/``; the executors
(``executors.py``) train the missing ones and ``results.py`` tabulates the finished ones.

Budgets:
    ``smoke``: seconds, for CI; numbers are meaningless.
    ``small``: sized for a 2-core CPU in about an hour per seed; usually a shrunken task, labelled
        as not comparable to the paper's cells.
    ``paper``: the paper's hyperparameters and seeds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from idspn_experiments.engine.config import config_diff, config_to_dict, load_config
from idspn_experiments.engine.spec import Experiment
from idspn_experiments.engine.train import RunResult, load_run_result
from idspn_experiments.runs.results import ResultsTable, RunRecord

__all__ = [
    "BUDGETS",
    "Budget",
    "RunPlan",
    "Reproduction",
    "PlannedRun",
    "select_plan",
    "plan_runs",
    "finished_run",
    "run_record",
]

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
    # Optional relative cost of a run from its config: longest runs first in a pool, and the
    # time-left estimate. None: train.steps.
    cost: Callable[[Any], float] | None = None


@dataclass(frozen=True)
class PlannedRun:
    """One entry of a reproduction's manifest: a planned run for one seed."""

    id: str  # "<plan key>/seed<seed>": stable, and the run's folder under runs/
    key: str  # plan key
    row: str  # table row key
    column: str  # table column key
    seed: int
    config: dict[str, Any]  # the run's full config
    config_hash: str  # first 12 hex digits of the SHA-256 of the config's canonical JSON
    cost: float  # relative cost (Reproduction.cost, default train.steps)


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


def finished_run(run_dir: Path, config: dict[str, Any]) -> RunResult | None:
    """The result of the finished run in ``run_dir``, or None; an error if it ran another config."""
    done = load_run_result(run_dir)
    if done is not None:
        diff = config_diff(done.config, config)
        if diff:
            raise ValueError(
                f"{run_dir} holds a finished run with another config ({'; '.join(diff)}); choose another --out"
            )
    return done


def run_record(run: PlannedRun, budget: str, run_dir: Path, result: RunResult) -> RunRecord:
    """The results-table record of the finished run ``run``."""
    return RunRecord(
        key=run.key,
        row=run.row,
        column=run.column,
        seed=run.seed,
        budget=budget,
        run_dir=str(run_dir),
        val=result.val,
        test=result.test,
        steps=result.steps,
        best_step=result.best_step,
        wall_time_s=result.wall_time_s,
        step_time_s=result.step_time_s,
        world_size=result.world_size,
        device=result.device,
    )


def _config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def plan_runs(
    reproduction: Reproduction, budget: str, seeds: Sequence[int] | None = None, rows: Sequence[str] | None = None
) -> list[PlannedRun]:
    """Every planned run of ``reproduction`` at ``budget`` for every seed, seed-major in plan order.

    Raises:
        ValueError: for an unknown budget or row, or two runs with the same id.
    """
    seeds, plan = select_plan(reproduction, budget, seeds, rows)
    config_type = reproduction.experiment.config_type
    configs = [load_config(config_type, p.preset, p.overrides) for p in plan]  # the seed changes nothing else
    costs = [float(c.train.steps) if reproduction.cost is None else float(reproduction.cost(c)) for c in configs]
    runs: list[PlannedRun] = []
    for seed in seeds:
        for p, cfg, cost in zip(plan, configs, costs, strict=True):
            config = config_to_dict(replace(cfg, seed=seed))
            runs.append(
                PlannedRun(f"{p.key}/seed{seed}", p.key, p.row, p.column, seed, config, _config_hash(config), cost)
            )
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the plan of {reproduction.name!r} at budget {budget!r} repeats run keys")
    return runs
