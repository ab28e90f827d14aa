"""Table 2's claims checked on cells (numbering/tables.py)."""

from idspn_experiments.numbering.tables import TABLE2, table2_checks
from idspn_experiments.runs.results import CellStats, RunRecord, render_markdown

# Accuracy (%) per row at 1x, 10x, 100x (a small-budget run's values).
ROWS = {
    "deepsets": (0.0, 0.0, 0.0),
    "transformer_no_pe": (0.0, 0.0, 0.0),
    "transformer_random_pe": (65.0, 49.9, 57.4),
    "transformer_pe": (15.3, 74.3, 92.8),
    "bilstm": (0.4, 0.1, 0.0),
    "dspn": (92.5, 94.5, 94.3),
    "idspn": (94.2, 94.7, 95.7),
}


def _stats(rows):
    return {
        (row, column): CellStats(v, None, 1, (v,))
        for row, values in rows.items()
        for column, v in zip(("1x", "10x", "100x"), values, strict=True)
    }


def test_every_claim_holds_on_cells_where_it_does():
    lines = table2_checks(_stats(ROWS))
    assert len(lines) == 4 and all(line.startswith("- ✓ ") for line in lines), lines
    assert lines[0].endswith("holds in 3 of 3 training-set sizes.") and lines[3].endswith(
        "holds in 1 of 1 training-set sizes."
    )


def test_a_claim_that_fails_in_one_column_is_marked_and_counted():
    rows = {**ROWS, "dspn": (92.5, 96.0, 94.3), "deepsets": (0.0, 7.0, 0.0)}
    lines = table2_checks(_stats(rows))
    assert lines[0].startswith("- ✗ ") and lines[0].endswith("holds in 2 of 3 training-set sizes.")
    assert lines[2] == "- ✗ iDSPN above DSPN: holds in 2 of 3 training-set sizes."


def test_missing_cells_are_left_out_and_the_report_prints_the_claims():
    lines = table2_checks({k: v for k, v in _stats(ROWS).items() if k[1] != "100x"})
    assert lines[2] == "- ✓ iDSPN above DSPN: holds in 2 of 2 training-set sizes."
    records = [
        RunRecord(f"{row}/{col}", row, col, 0, "small", "", {}, {"accuracy": v / 100}, 1000, 1000, 60.0, 0.1)
        for row, values in ROWS.items()
        for col, v in zip(("1x", "10x", "100x"), values, strict=True)
    ]
    text = render_markdown(TABLE2.table, records, "small", seeds=(0,))
    assert "## Claims of the paper at this budget" in text and "- ✓ iDSPN above DSPN" in text
