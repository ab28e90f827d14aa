"""``idspn reproduce autoencoding``: Tables 5 and 6, Figures 1-4 and the timing comparison of Section 4.2.

Run it as a sweep (``--workers``, see ``idspn/experiments/sweep.py``)::

    idspn reproduce autoencoding --budget smoke --out results/ae-smoke                  # seconds
    idspn reproduce autoencoding --budget small --out results/ae-small --workers 2      # ~1 h, 2 cores
    idspn reproduce autoencoding --budget paper --out results/ae-paper --workers 8
    idspn reproduce autoencoding --budget paper --out results/ae-paper --workers 64 \\
        --executor slurm --slurm partition=gpu gpus_per_node=1 cpus_per_task=4 timeout_min=600

The engine's ``results.md`` holds every cell in Table 5's layout (loss x 10^3, the generic table
format); ``report.md`` holds Tables 5 and 6 in the paper's notation, the claims checked cell by
cell, the equal-compute and timing tables and the figures (``autoencoding/report.py``).
"""

from __future__ import annotations

from idspn.experiments.autoencoding.experiment import AUTOENCODING
from idspn.experiments.autoencoding.grid import (
    BUDGET_GRIDS,
    PAPER_ITERS,
    PAPER_SIZES,
    POOLING_KINDS,
    SEEDS,
    TABLE5_KINDS,
    autoencoding_plan,
    run_cost,
)
from idspn.experiments.autoencoding.models import MODEL_KINDS
from idspn.experiments.autoencoding.paper_results import PAPER_LOSS
from idspn.experiments.autoencoding.report import write_report
from idspn.experiments.reproduce import Reproduction
from idspn.experiments.results import PaperCell, ResultsTable, TableColumn, TableRow

__all__ = ["AUTOENCODING_REPRODUCTION", "TABLE_SCALE"]

TABLE_SCALE = 1e3  # the generic results table prints loss x 10^3 with three decimals

_ROWS = tuple(
    TableRow(f"n{n}/{kind}/it{iters}", f"{MODEL_KINDS[kind].label}, it={iters}", section=f"n = {n}")
    for n in PAPER_SIZES
    for iters in PAPER_ITERS
    for kind in (*TABLE5_KINDS, *POOLING_KINDS)
)
_COLUMNS = tuple(TableColumn(f"d{d}", f"d={d}") for d in PAPER_SIZES)
_PAPER = {
    (f"n{n}/{kind}/it{iters}", f"d{d}"): PaperCell(mean * TABLE_SCALE, std * TABLE_SCALE, digits=3)
    for (n, d, kind, iters), (mean, std) in PAPER_LOSS.items()
}

AUTOENCODING_REPRODUCTION = Reproduction(
    name="autoencoding",
    experiment=AUTOENCODING,
    table=ResultsTable(
        title="Tables 5 and 6: random-multiset autoencoding, held-out Hungarian Huber loss × 10³ (lower is better)",
        metric="loss",
        rows=_ROWS,
        columns=_COLUMNS,
        paper=_PAPER,
        split="test",
        scale=TABLE_SCALE,
        digits=3,
    ),
    plan=autoencoding_plan,
    seeds=SEEDS,
    notes={budget: grid.note + " Paper notation, claims and figures: report.md." for budget, grid in BUDGET_GRIDS.items()},
    description="Tables 5-6, Figures 1-4: DSPN vs iDSPN (+momentum), FSPool vs sum/mean, n, d in {2..32}",
    report=write_report,
    cost=run_cost,
)
