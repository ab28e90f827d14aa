"""Finished autoencoding runs grouped into cells: one (n, d, model, iterations) point over seeds.

The reports (tables, figures, timing) all read this one view of the sweep's records. Runs whose
final loss is not finite (diverged training) are kept out of the mean and counted, as the paper
excluded divergent runs (Appendix E.2).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from idspn.experiments.autoencoding.grid import GridPoint, point_of_key
from idspn.experiments.results import RunRecord

__all__ = ["Cell", "aggregate"]


@dataclass(frozen=True)
class Cell:
    """All seeds of one grid point."""

    point: GridPoint
    losses: tuple[float, ...]  # final held-out loss of every run with a finite loss
    diverged: int  # runs whose final loss is NaN or inf
    step_time_s: float  # seconds per training step, mean over runs
    epoch_time_s: float  # seconds per epoch (step time x steps per epoch), mean over runs
    run_dirs: tuple[str, ...]  # folders of the runs, in seed order
    seeds: tuple[int, ...]  # seeds of the runs, same order

    @property
    def mean(self) -> float:
        return statistics.fmean(self.losses) if self.losses else math.nan

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds; None with fewer than two runs."""
        return statistics.stdev(self.losses) if len(self.losses) > 1 else None


def _steps_per_epoch(run_dir: str) -> float:
    config = json.loads((Path(run_dir) / "config.json").read_text())
    return config["data"]["train_size"] / config["train"]["batch_size"]


def aggregate(records: Sequence[RunRecord]) -> dict[GridPoint, Cell]:
    """Group the records of an autoencoding sweep by grid point (records of other keys are ignored)."""
    groups: dict[GridPoint, list[RunRecord]] = {}
    for record in records:
        point = point_of_key(record.key)
        if point is not None and record.test is not None and "loss" in record.test:
            groups.setdefault(point, []).append(record)
    cells = {}
    for point, runs in groups.items():
        runs = sorted(runs, key=lambda r: r.seed)
        losses = [r.test["loss"] for r in runs if r.test is not None]
        finite = tuple(v for v in losses if math.isfinite(v))
        cells[point] = Cell(
            point=point,
            losses=finite,
            diverged=len(losses) - len(finite),
            step_time_s=statistics.fmean(r.step_time_s for r in runs),
            epoch_time_s=statistics.fmean(r.step_time_s * _steps_per_epoch(r.run_dir) for r in runs),
            run_dirs=tuple(r.run_dir for r in runs),
            seeds=tuple(r.seed for r in runs),
        )
    return cells
