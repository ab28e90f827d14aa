import json

import pytest

from idspn_experiments.runs.results import (
    PaperCell,
    ResultsTable,
    RunRecord,
    TableColumn,
    TableRow,
    cell_stats,
    format_duration,
    render_markdown,
    write_results,
)

TABLE = ResultsTable(
    title="Table X",
    metric="accuracy",
    rows=(TableRow("a", "Model A", ("✓",)), TableRow("b", "Model B", ("✗",), section="part 2")),
    columns=(TableColumn("1x", "1×"), TableColumn("10x", "10×")),
    paper={("a", "1x"): PaperCell(96.8, 0.6), ("b", "10x"): PaperCell(12.03, None, digits=2)},
    mark_headers=("Equivariant",),
)


def _record(row, column, seed, acc):
    return RunRecord(
        key=f"{row}/{column}",
        row=row,
        column=column,
        seed=seed,
        budget="smoke",
        run_dir="x",
        val={"accuracy": acc},
        test={"accuracy": acc},
        steps=10,
        best_step=5,
        wall_time_s=2.0,
        step_time_s=0.2,
    )


def test_cells_are_mean_and_sample_std_over_seeds_in_percent():
    stats = cell_stats(TABLE, [_record("a", "1x", 0, 0.5), _record("a", "1x", 1, 0.7), _record("b", "1x", 0, 0.1)])
    assert stats[("a", "1x")].mean == pytest.approx(60.0) and stats[("a", "1x")].n == 2
    assert stats[("a", "1x")].std == pytest.approx(14.142135, rel=1e-5)
    assert stats[("b", "1x")].std is None and ("b", "10x") not in stats


def test_markdown_has_the_papers_layout_and_numbers():
    md = render_markdown(TABLE, [_record("a", "1x", 0, 0.5), _record("a", "1x", 1, 0.7)], "smoke", "a note", [0, 1])
    assert "| Model | Equivariant | 1× (ours) | 1× (paper) | 10× (ours) | 10× (paper) |" in md
    assert "| Model A | ✓ | 60.0 ± 14.1 | 96.8 ± 0.6 | - | - |" in md
    assert "| **part 2** |" in md and "12.03" in md and "a note" in md and "## Time" in md


def test_write_results_writes_both_files(tmp_path):
    records = [_record("a", "1x", 0, 0.5)]
    json_path, md_path = write_results(tmp_path, "x", TABLE, records, "smoke", [0])
    data = json.loads(json_path.read_text())
    assert data["budget"] == "smoke" and len(data["runs"]) == 1 and data["runs"][0]["wall_time_s"] == 2.0
    cell = next(c for c in data["table"] if c["row"] == "a" and c["column"] == "1x")
    assert cell["ours"]["mean"] == pytest.approx(50.0) and cell["paper"] == {"mean": 96.8, "std": 0.6}
    assert md_path.read_text().startswith("# Table X")


@pytest.mark.parametrize(
    "seconds, text", [(8.46, "8.5 s"), (42.4, "42 s"), (210, "3.5 min"), (5748, "95.8 min"), (9000, "2.5 h")]
)
def test_durations_are_written_in_the_unit_a_person_reads(seconds, text):
    assert format_duration(seconds) == text
