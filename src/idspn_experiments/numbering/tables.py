"""Reproductions of Table 2 (Section 4.1) and Table 4 (Appendix E.1), with the published numbers.

Hyperparameters per row follow the original experiment scripts (davzha/multiset-equivariance): DSPN/iDSPN and
DeepSets have width 256, the transformers and the BiLSTM 64, all doubled for 8 classes; iDSPN uses
Nesterov momentum 0.9 and inner gradient clipping at norm 40, DSPN neither. Columns are the
training-set sizes 1x, 10x, 100x of the base size (640 in the paper). Every run uses the same
number of steps (50,000 at the paper budget); the paper's validation every 100 / 10 / 1 epochs is
every 500 steps at batch size 128 for all three sizes.
"""

from __future__ import annotations

from collections.abc import Callable

from idspn_experiments.numbering.models import NUMBERING_MODELS
from idspn_experiments.numbering.task import NUMBERING
from idspn_experiments.runs.plan import Reproduction, RunPlan
from idspn_experiments.runs.results import CellStats, PaperCell, ResultsTable, TableColumn, TableRow

__all__ = ["TABLE2", "TABLE4", "numbering_plan"]

# budget -> (preset, base training-set size, width of DSPN/iDSPN/DeepSets, width of the others at 4 classes)
_BUDGETS: dict[str, tuple[str, int, int, int]] = {
    "smoke": ("numbering-smoke", 32, 16, 16),
    "small": ("numbering-small", 640, 256, 64),
    "paper": ("numbering-paper", 640, 256, 64),
}
_COLUMNS = (TableColumn("1x", "1×"), TableColumn("10x", "10×"), TableColumn("100x", "100×"))
_MULTIPLIERS = {"1x": 1, "10x": 10, "100x": 100}
_WIDE = ("deepsets", "dspn", "idspn")
_BASE_ROWS = ("deepsets", "transformer_no_pe", "transformer_random_pe", "transformer_pe", "bilstm", "dspn", "idspn")
_DA_ROWS = ("transformer_random_pe", "transformer_pe", "bilstm")

_SEEDS = {"smoke": (0,), "small": (0,), "paper": (0, 1, 2, 3, 4, 5)}
_NOTES = {
    "smoke": "Smoke budget (CI): a tiny task (2 classes, sets of 6) trained for a few steps. The numbers are "
    "meaningless and not comparable to the paper's cells.",
    "small": "Small budget (2-core CPU, about an hour per seed for Table 2): **sets of 16 elements instead of 64**, "
    "1,000 training steps instead of 50,000 (validation on 1,280 sets every 100 steps, test on 6,400 sets). "
    "Widths, optimiser and training-set sizes as in the paper. **Not comparable to the paper's cells**; it "
    "shows the qualitative pattern only.",
    "paper": "Paper budget: the paper's hyperparameters (sets of 64, 50,000 steps, validation on 6,400 sets "
    "every 500 steps, test on 64,000 sets, 6 seeds).",
}


def _row_overrides(model: str, classes: int, budget: str) -> list[str]:
    _, _, wide, narrow = _BUDGETS[budget]
    scale = classes // 4 if budget != "smoke" else 1  # the paper doubles every width for 8 classes
    width = (wide if model in _WIDE else narrow) * max(scale, 1)
    out = [f"model.name={model}", f"data.classes={classes}", f"model.hidden_dim={width}"]
    if model in ("dspn", "idspn"):
        out.append(f"model.latent_dim={width}")
    if model == "dspn":
        out += ["model.momentum=0.0", "model.grad_clip=none"]
    if model == "idspn":
        out += ["model.momentum=0.9", "model.grad_clip=40.0"]
    return out


def numbering_plan(budget: str, rows: list[tuple[str, str, int, bool]]) -> list[RunPlan]:
    """Runs of one seed for table rows ``(row key, model, classes, augment)`` x the three sizes."""
    preset, base, _, _ = _BUDGETS[budget]
    plan = []
    for row_key, model, classes, augment in rows:
        for column in _COLUMNS:
            overrides = _row_overrides(model, classes, budget)
            overrides += [f"data.train_size={base * _MULTIPLIERS[column.key]}", f"data.augment={str(augment).lower()}"]
            key = f"c{classes}/{model}{'-da' if augment else ''}/{column.key}"
            plan.append(RunPlan(key=key, row=row_key, column=column.key, preset=preset, overrides=tuple(overrides)))
    return plan


def _marks(model: str) -> tuple[str, str]:
    entry = NUMBERING_MODELS[model]
    return ("✓" if entry.set_equivariant else "✗", "✓" if entry.multiset_equivariant else "✗")


def table2_checks(stats: dict[tuple[str, str], CellStats]) -> list[str]:
    """Section 4.1's claims on Table 2's cells, one line each: how many columns they hold in."""
    columns = [c.key for c in _COLUMNS]

    def means(column: str, rows: tuple[str, ...]) -> list[float] | None:
        """The rows' means in ``column``, or None when a cell is missing (the claim is not judged there)."""
        try:
            return [stats[(row, column)].mean for row in rows]
        except KeyError:
            return None

    def holds(name: str, test: Callable[[str], bool | None], only: tuple[str, ...] | None = None) -> str:
        verdicts = [v for v in (test(c) for c in only or columns) if v is not None]
        mark = "✓" if verdicts and all(verdicts) else "✗"
        return f"- {mark} {name}: holds in {sum(verdicts)} of {len(verdicts)} training-set sizes."

    def compare(column: str, better: str, worse: tuple[str, ...]) -> bool | None:
        values = means(column, (better, *worse))
        return None if values is None else all(values[0] > v for v in values[1:])

    def below(column: str, rows: tuple[str, ...], limit: float) -> bool | None:
        values = means(column, rows)
        return None if values is None else all(v < limit for v in values)

    set_equivariant = ("deepsets", "transformer_no_pe")
    return [
        holds(
            "set-equivariant models cannot number equal elements (DeepSets, Transformer without PE below 5 %)",
            lambda c: below(c, set_equivariant, 5.0),
        ),
        holds("iDSPN above both set-equivariant models", lambda c: compare(c, "idspn", set_equivariant)),
        holds("iDSPN above DSPN", lambda c: compare(c, "idspn", ("dspn",))),
        holds(
            "with the fewest training sets (1×), iDSPN above the order-dependent models (Transformer with PE "
            "or random PE, BiLSTM)",
            lambda c: compare(c, "idspn", ("transformer_pe", "transformer_random_pe", "bilstm")),
            only=("1x",),
        ),
    ]


def _cells(row: str, *published: tuple[float, float | None], digits: int = 1) -> dict[tuple[str, str], PaperCell]:
    return {(row, col.key): PaperCell(mean, std, digits) for col, (mean, std) in zip(_COLUMNS, published, strict=True)}


# --- Table 2 ----------------------------------------------------------------------------------

_TABLE2_PAPER = {
    **_cells("deepsets", (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)),
    **_cells("transformer_no_pe", (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)),
    **_cells("transformer_random_pe", (28.5, 8.1), (22.6, 5.2), (22.7, 7.7)),
    **_cells("transformer_pe", (0.0, 0.0), (46.4, 26.2), (94.4, 1.8)),
    **_cells("bilstm", (0.0, None), (25.1, 20.2), (97.9, 2.1)),
    **_cells("dspn", (89.4, 2.4), (88.9, 4.9), (90.8, 4.2)),
    **_cells("idspn", (96.8, 0.6), (98.1, 0.3), (97.9, 0.6)),
}

TABLE2 = Reproduction(
    name="numbering",
    experiment=NUMBERING,
    table=ResultsTable(
        title="Table 2: class-specific numbering, sample-level test accuracy (%)",
        metric="accuracy",
        rows=tuple(TableRow(m, NUMBERING_MODELS[m].label, _marks(m)) for m in _BASE_ROWS),
        columns=_COLUMNS,
        paper=_TABLE2_PAPER,
        mark_headers=("Set-equivariant", "Multiset-equivariant"),
        checks=table2_checks,
    ),
    plan=lambda budget: numbering_plan(budget, [(m, m, 4, False) for m in _BASE_ROWS]),
    seeds=_SEEDS,
    notes=_NOTES,
    description="Table 2: seven models x training-set sizes 1x/10x/100x, 4 classes",
)

# --- Table 4 ----------------------------------------------------------------------------------

_DA_LABEL = {m: NUMBERING_MODELS[m].label + " + DA" for m in _DA_ROWS}
_TABLE4_ROWS4 = (
    [(f"c4/{m}", m, 4, False) for m in _BASE_ROWS[:5]]
    + [(f"c4/{m}-da", m, 4, True) for m in _DA_ROWS]
    + [(f"c4/{m}", m, 4, False) for m in ("dspn", "idspn")]
)
_TABLE4_ROWS8 = [(f"c8/{m}-da", m, 8, True) for m in _DA_ROWS] + [(f"c8/{m}", m, 8, False) for m in ("dspn", "idspn")]


def _table4_row(row_key: str, model: str, classes: int, augment: bool) -> TableRow:
    label = _DA_LABEL[model] if augment else NUMBERING_MODELS[model].label
    return TableRow(row_key, label, _marks(model), section=f"{classes} classes")


_TABLE4_PAPER = {
    **{(f"c4/{r}", c): v for (r, c), v in _TABLE2_PAPER.items()},
    **_cells("c4/transformer_random_pe-da", (26.83, 6.3), (24.42, 4.0), (25.52, 6.7), digits=2),
    **_cells("c4/transformer_pe-da", (94.93, 1.9), (96.35, 1.9), (96.58, 1.2), digits=2),
    **_cells("c4/bilstm-da", (98.12, 0.6), (99.04, 0.6), (98.83, 1.6), digits=2),
    **_cells("c8/transformer_random_pe-da", (6.95, 4.5), (12.03, 6.4), (11.23, 2.3), digits=2),
    **_cells("c8/transformer_pe-da", (38.37, 12.6), (96.95, 0.9), (96.79, 1.7), digits=2),
    **_cells("c8/bilstm-da", (61.56, 15.6), (49.03, 10.4), (61.67, 26.7), digits=2),
    **_cells("c8/dspn", (72.51, 1.9), (73.87, 6.8), (72.65, 12.3), digits=2),
    **_cells("c8/idspn", (90.91, 0.6), (96.33, 1.3), (96.78, 1.5), digits=2),
}

TABLE4 = Reproduction(
    name="numbering-extended",
    experiment=NUMBERING,
    table=ResultsTable(
        title="Table 4: class-specific numbering with data augmentation (DA) and 8 classes, "
        "sample-level test accuracy (%)",
        metric="accuracy",
        rows=tuple(_table4_row(*r) for r in _TABLE4_ROWS4 + _TABLE4_ROWS8),
        columns=_COLUMNS,
        paper=_TABLE4_PAPER,
        mark_headers=("Set-equivariant", "Multiset-equivariant"),
    ),
    plan=lambda budget: numbering_plan(budget, _TABLE4_ROWS4 + _TABLE4_ROWS8),
    seeds=_SEEDS,
    notes=_NOTES,
    description="Table 4: Table 2 plus permutation augmentation (DA) and 8 classes",
)
