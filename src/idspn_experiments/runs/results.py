"""Results of a reproduction: ``results.json`` and a ``results.md`` table beside the paper's numbers.

A :class:`ResultsTable` describes a table of the paper (rows = models, columns = settings, the
published mean and std of every cell); a :class:`RunRecord` is one finished run (one row, column
and seed). :func:`write_results` aggregates the records into mean +- std over seeds and writes
both files atomically.

Standard deviations over seeds are sample standard deviations (``ddof=1``); a cell with one seed
shows no std.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from idspn_experiments.engine.io import atomic_write_json, atomic_write_text

__all__ = [
    "PaperCell",
    "TableRow",
    "TableColumn",
    "ResultsTable",
    "RunRecord",
    "CellStats",
    "cell_stats",
    "format_duration",
    "render_markdown",
    "write_results",
]


@dataclass(frozen=True)
class PaperCell:
    """A published number: mean and (if given) standard deviation, in the table's unit."""

    mean: float
    std: float | None = None
    digits: int = 1  # decimals of the mean as published (the std is printed with one)

    def text(self) -> str:
        mean = f"{self.mean:.{self.digits}f}"
        return mean if self.std is None else f"{mean} ± {self.std:.1f}"


@dataclass(frozen=True)
class TableRow:
    """One row of a paper table (usually a model variant)."""

    key: str  # row key used by the run plan
    label: str  # printed label
    marks: tuple[str, ...] = ()  # extra printed cells, e.g. the equivariance check marks
    section: str | None = None  # section heading the row belongs to (e.g. "8 classes")


@dataclass(frozen=True)
class TableColumn:
    """One setting of a paper table (e.g. the training-set size), or one metric of a run (e.g. AP at a threshold)."""

    key: str  # column key used by the run plan
    label: str  # printed label
    metric: str | None = None  # metric shown in this column (None: the table's metric)
    runs: str | None = None  # plan column whose runs fill this column (None: key); one run may fill several


@dataclass(frozen=True)
class ResultsTable:
    """The layout of a paper table and its published numbers."""

    title: str  # e.g. "Table 2: class-specific numbering, sample accuracy (%)"
    metric: str  # metric name in the run results, e.g. "accuracy"
    rows: tuple[TableRow, ...]
    columns: tuple[TableColumn, ...]
    paper: dict[tuple[str, str], PaperCell]  # (row key, column key) -> published number
    split: str = "test"  # which result split the metric is read from ("test" or "val")
    scale: float = 100.0  # multiplies our metric into the table's unit (fraction -> %)
    mark_headers: tuple[str, ...] = ()  # headers of TableRow.marks
    digits: int = 1  # decimals of our numbers
    # the paper's qualitative claims checked on our cells: (cell stats) -> one markdown line per claim
    checks: Callable[[dict[tuple[str, str], CellStats]], list[str]] | None = None


@dataclass
class RunRecord:
    """One finished run of a reproduction."""

    key: str  # run key of the plan (its folder under runs/)
    row: str  # table row key
    column: str  # table column key
    seed: int
    budget: str  # "smoke" | "small" | "paper"
    run_dir: str  # folder holding the run's logs and checkpoints
    val: dict[str, float]  # validation metrics of the selected model
    test: dict[str, float] | None  # test metrics of the selected model
    steps: int  # training steps
    best_step: int  # step of the selected model
    wall_time_s: float  # wall time of the run
    step_time_s: float  # seconds per training step
    world_size: int = 1  # data-parallel processes
    device: str = "cpu"  # device type
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CellStats:
    """Our aggregate of one cell, in the table's unit."""

    mean: float
    std: float | None  # None with fewer than two seeds
    n: int  # seeds
    values: tuple[float, ...]

    def text(self, digits: int) -> str:
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def cell_stats(table: ResultsTable, records: Sequence[RunRecord]) -> dict[tuple[str, str], CellStats]:
    """Mean and sample std over seeds of ``table.metric`` for every (row, column) with results."""
    values: dict[tuple[str, str], list[float]] = {}
    for r in records:
        metrics = r.test if table.split == "test" else r.val
        for col in table.columns:
            name = col.metric or table.metric
            if metrics is None or (col.runs or col.key) != r.column or name not in metrics:
                continue
            values.setdefault((r.row, col.key), []).append(metrics[name] * table.scale)
    out = {}
    for cell, vs in values.items():
        mean = sum(vs) / len(vs)
        std = math.sqrt(sum((v - mean) ** 2 for v in vs) / (len(vs) - 1)) if len(vs) > 1 else None
        out[cell] = CellStats(mean, std, len(vs), tuple(vs))
    return out


def format_duration(seconds: float) -> str:
    """A duration for people: ``8.5 s``, ``42 s``, ``3.5 min``, ``1.6 h``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render_markdown(
    table: ResultsTable, records: Sequence[RunRecord], budget: str, note: str = "", seeds: Sequence[int] = ()
) -> str:
    """The results table in the paper's layout, ours beside the paper's, then the time spent."""
    stats = cell_stats(table, records)
    lines = [f"# {table.title}", ""]
    lines.append(
        f"Budget: `{budget}`; seeds: {', '.join(map(str, seeds)) or '-'}; mean ± std over seeds "
        f"({table.split} split, metric `{table.metric}`)."
    )
    if note:
        lines += ["", note]
    lines.append("")
    headers = ["Model", *table.mark_headers]
    for col in table.columns:
        headers += [f"{col.label} (ours)", f"{col.label} (paper)"]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("| " + " | ".join(["---"] * len(headers)) + " |")
    section = None
    for row in table.rows:
        if row.section is not None and row.section != section:
            section = row.section
            lines.append("| " + " | ".join([f"**{section}**"] + [""] * (len(headers) - 1)) + " |")
        cells = [row.label, *row.marks]
        for col in table.columns:
            ours = stats.get((row.key, col.key))
            paper = table.paper.get((row.key, col.key))
            ours_text = "-" if ours is None else ours.text(table.digits)
            if ours is not None and seeds and ours.n < len(seeds):
                ours_text += f" (n={ours.n})"
            cells += [ours_text, "-" if paper is None else paper.text()]
        lines.append("| " + " | ".join(cells) + " |")
    if table.checks is not None and stats:
        lines += ["", "## Claims of the paper at this budget", "", *table.checks(stats)]

    # time spent
    run_columns = list(dict.fromkeys(c.runs or c.key for c in table.columns))  # each run counted once
    labels = {c.key: f"{c.label}: " for c in table.columns}
    lines += [
        "",
        "## Time",
        "",
        "| Model | " + " | ".join(f"{labels.get(k, '')}wall time, s/step" for k in run_columns) + " |",
        "| --- | " + " | ".join(["---"] * len(run_columns)) + " |",
    ]
    total = 0.0
    for row in table.rows:
        cells = [row.label + (f" ({row.section})" if row.section else "")]
        for column in run_columns:
            runs = [r for r in records if r.row == row.key and r.column == column]
            total += sum(r.wall_time_s for r in runs)
            if not runs:
                cells.append("-")
                continue
            wall = sum(r.wall_time_s for r in runs) / len(runs)
            step = sum(r.step_time_s for r in runs) / len(runs)
            cells.append(f"{format_duration(wall)}, {step:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    devices = sorted({f"{r.device} x{r.world_size}" for r in records})
    lines += [
        "",
        f"Total wall time of the runs: {format_duration(total)} ({len(records)} runs; devices: "
        f"{', '.join(devices) or '-'}). Wall time is per run, averaged over seeds.",
    ]
    return "\n".join(lines) + "\n"


def write_results(
    out_dir: str | Path,
    name: str,
    table: ResultsTable,
    records: Sequence[RunRecord],
    budget: str,
    seeds: Sequence[int],
    note: str = "",
) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` to ``out_dir`` atomically; returns their paths."""
    out_dir = Path(out_dir)
    stats = cell_stats(table, records)
    cells = []
    for row in table.rows:
        for col in table.columns:
            ours, paper = stats.get((row.key, col.key)), table.paper.get((row.key, col.key))
            cells.append(
                {
                    "row": row.key,
                    "column": col.key,
                    "label": row.label,
                    "section": row.section,
                    "ours": None
                    if ours is None
                    else {"mean": ours.mean, "std": ours.std, "n": ours.n, "values": list(ours.values)},
                    "paper": None if paper is None else {"mean": paper.mean, "std": paper.std},
                }
            )
    payload = {
        "reproduction": name,
        "title": table.title,
        "budget": budget,
        "seeds": list(seeds),
        "metric": table.metric,
        "split": table.split,
        "scale": table.scale,
        "note": note,
        "table": cells,
        "runs": [asdict(r) for r in records],
    }
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    atomic_write_json(json_path, payload)
    atomic_write_text(md_path, render_markdown(table, records, budget, note, seeds))
    return json_path, md_path
