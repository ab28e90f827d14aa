"""The runs of the autoencoding sweep per budget: (n, d) cells x inner iterations x model kinds.

Every run is one grid point for one seed. Its key ``n{n}-d{d}/{kind}/it{iters}`` names its folder
under ``runs/`` and never depends on the budget, the order of the grid or the other points, so a
run keeps its identity when the grid grows (the budget's preset is part of its config, and a
finished run with another config is never silently reused).

Budgets:
    ``smoke``: 2 cells, 2 iteration counts, tiny widths, a few steps: seconds, for CI.
    ``small``: (n, d) in {(2, 2), (4, 4), (8, 8), (4, 16)} at 10 and 20 iterations for the three
        models of Table 5, plus sum and mean pooling at (8, 8) (Table 6): 28 runs, 750 steps each
        (1.5 epochs of 64,000 sets), one seed; about an hour on 2 CPU cores with 2 workers.
    ``paper``: n, d in {2, 4, 8, 16, 32}, 10/20/40 iterations, all five models everywhere
        (375 runs per seed), 20,000 steps (40 epochs), 8 seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

from idspn.experiments.autoencoding.config import AutoencodingConfig
from idspn.experiments.autoencoding.models import MODEL_KINDS
from idspn.experiments.reproduce import RunPlan

__all__ = ["GridPoint", "Budget", "BUDGET_GRIDS", "SEEDS", "PAPER_SIZES", "PAPER_ITERS", "TABLE5_KINDS",
           "POOLING_KINDS", "grid_points", "autoencoding_plan", "run_cost", "point_of_key"]

PAPER_SIZES = (2, 4, 8, 16, 32)  # n and d of Section 4.2
PAPER_ITERS = (10, 20, 40)
TABLE5_KINDS = ("idspn-mom", "idspn", "dspn")  # the models of Table 5, in the paper's order
POOLING_KINDS = ("idspn-mom-sum", "idspn-mom-mean")  # the set-equivariant ablations of Table 6


@dataclass(frozen=True)
class GridPoint:
    """One configuration of the sweep (one run per seed)."""

    set_size: int  # n
    set_dim: int  # d
    iters: int  # inner iterations
    kind: str  # key of MODEL_KINDS

    @property
    def key(self) -> str:
        """Stable run key: the run's folder under ``runs/`` (without the seed)."""
        return f"n{self.set_size}-d{self.set_dim}/{self.kind}/it{self.iters}"

    @property
    def row(self) -> str:
        """Row key of the results table (one row per n, model and iteration count, as in Table 5)."""
        return f"n{self.set_size}/{self.kind}/it{self.iters}"

    @property
    def column(self) -> str:
        """Column key of the results table (one column per d)."""
        return f"d{self.set_dim}"

    def overrides(self) -> tuple[str, ...]:
        """``key=value`` overrides of the budget's preset that select this point."""
        return (f"data.set_size={self.set_size}", f"data.set_dim={self.set_dim}", f"model.iters={self.iters}",
                *MODEL_KINDS[self.kind].overrides())


@dataclass(frozen=True)
class Budget:
    """The grid of one budget."""

    preset: str  # base preset of every run
    cells: tuple[tuple[int, int], ...]  # (n, d) of the Table 5 models
    iters: tuple[int, ...]  # inner iteration counts
    pooling_cells: tuple[tuple[int, int], ...]  # (n, d) of the Table 6 pooling ablation
    note: str  # printed above the results


_ALL_CELLS = tuple((n, d) for n in PAPER_SIZES for d in PAPER_SIZES)

BUDGET_GRIDS: dict[str, Budget] = {
    "smoke": Budget(
        "autoencoding-smoke", ((2, 2), (2, 4)), (10, 20), ((2, 4),),
        "Smoke budget (CI): widths 16, 4 training steps on 64 sets. The numbers are meaningless and not "
        "comparable to the paper's cells.",
    ),
    "small": Budget(
        "autoencoding-small", ((2, 2), (4, 4), (8, 8), (4, 16)), (10, 20), ((8, 8),),
        "Small budget (2-core CPU, about an hour with `--workers 2`): 4 of the 25 (n, d) cells at 10 and 20 "
        "iterations, sum/mean pooling at (8, 8) only, **750 steps (1.5 epochs) instead of 20,000 (40 epochs)**, "
        "one seed. Models, widths, data sizes and optimiser as in the paper. Losses are higher than the paper's "
        "(training is far shorter), so compare the *ordering* of the models within a cell, not the values.",
    ),
    "paper": Budget(
        "autoencoding-paper", _ALL_CELLS, PAPER_ITERS, _ALL_CELLS,
        "Paper budget: n, d in {2, 4, 8, 16, 32}, 10/20/40 iterations, 40 epochs of 64,000 sets, 8 seeds; "
        "the pooling ablation on every cell.",
    ),
}

SEEDS: dict[str, tuple[int, ...]] = {"smoke": (0,), "small": (0,), "paper": tuple(range(8))}


def grid_points(budget: str) -> list[GridPoint]:
    """Every point of a budget: per (n, d) cell and iteration count, the Table 5 models then the ablations."""
    if budget not in BUDGET_GRIDS:
        raise ValueError(f"budget must be one of {tuple(BUDGET_GRIDS)}, got {budget!r}")
    grid = BUDGET_GRIDS[budget]
    points = []
    for n, d in sorted(set(grid.cells) | set(grid.pooling_cells)):
        for iters in grid.iters:
            kinds = (TABLE5_KINDS if (n, d) in grid.cells else ()) + (
                POOLING_KINDS if (n, d) in grid.pooling_cells else ())
            points += [GridPoint(n, d, iters, kind) for kind in kinds]
    return points


def point_of_key(key: str) -> GridPoint | None:
    """The grid point with run key ``key`` in any budget, or None."""
    return _POINTS_BY_KEY.get(key)


def autoencoding_plan(budget: str) -> list[RunPlan]:
    """The runs of one seed for ``budget`` (the manifest of the sweep, without seeds)."""
    points = grid_points(budget)  # checks the budget
    preset = BUDGET_GRIDS[budget].preset
    return [RunPlan(key=p.key, row=p.row, column=p.column, preset=preset, overrides=p.overrides()) for p in points]


# Relative cost of one training step by pooling: sum and mean skip FSPool's sort (measured ~0.6x).
_POOLING_COST = {"fspool": 1.0, "sum": 0.6, "mean": 0.6}


def run_cost(cfg: AutoencodingConfig) -> float:
    """Relative cost of a run, for scheduling the longest runs first and estimating the time left.

    One training step runs ``iters`` inner steps (forward and the fused vector-Jacobian product
    through the set encoder, linear in the number of elements), then backpropagates through one
    step (iDSPN, Eq. 9) or, for DSPN, through all of them (about one more inner step each).
    Measured on CPU at batch 128: 0.08 s (n=d=2, iDSPN, 10 iters) to 0.9 s (n=d=8, DSPN, 20 iters).
    """
    m, d = cfg.model, cfg.data
    inner = m.iters * (2 if m.backward == "unroll" else 1) + 2
    width = m.hidden_dim * (d.set_dim + m.latent_dim) / (512 * 520)
    return cfg.train.steps * (d.set_size * inner * width * _POOLING_COST[m.pooling] + 4.0)


_POINTS_BY_KEY = {p.key: p for budget in BUDGET_GRIDS for p in grid_points(budget)}
