import json

from idspn_experiments.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_reproduce_smoke_sweep_writes_results_report_and_figures(tmp_path, capsys):
    out = tmp_path / "ae"
    args = ["reproduce", "autoencoding", "--budget", "smoke", "--out", str(out), "--no-progress", "--workers", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "16 runs, 0 finished earlier, 16 to run" in printed and "[16/16 done" in printed
    data = json.loads((out / "results.json").read_text())
    assert data["budget"] == "smoke" and len(data["runs"]) == 16
    assert {r["key"] for r in data["runs"]} >= {"n2-d2/dspn/it20", "n2-d4/idspn-mom-mean/it10"}
    report = (out / "report.md").read_text()
    for text in (
        "## Table 5",
        "## Table 6",
        "## Time per epoch",
        "6.0e-5 ± 4e-5",
        "**Equal iterations**",
        "**Pooling**",
        "![figure4](figures/figure4.png)",
    ):
        assert text in report
    for name in ("figure1", "figure2", "figure3", "figure4"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == PNG
    assert "| 0.060" in (out / "results.md").read_text()  # the engine's table: the paper's 6.0e-5 as loss x 10^3
    # running it again trains nothing
    assert main(args) == 0
    assert "16 runs, 16 finished earlier, 0 to run" in capsys.readouterr().out


def test_reproducing_some_rows_trains_only_those_and_still_reports(tmp_path, capsys):
    out = tmp_path / "ae"
    assert (
        main(
            [
                "reproduce",
                "autoencoding",
                "--budget",
                "smoke",
                "--out",
                str(out),
                "--no-progress",
                "--rows",
                "n2/idspn-mom/it10",
                "n2/dspn/it10",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "4 runs, 0 finished earlier, 4 to run" in printed and "[4/4 done" in printed
    assert {r["key"] for r in json.loads((out / "results.json").read_text())["runs"]} == {
        f"n2-d{d}/{kind}/it10" for d in (2, 4) for kind in ("idspn-mom", "dspn")
    }
    assert "Baseline (DSPN) | 10 |" in (out / "report.md").read_text()
    assert (out / "figures" / "figure1.png").exists()
