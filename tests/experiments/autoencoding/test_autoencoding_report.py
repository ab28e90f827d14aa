import json

from idspn_experiments.autoencoding.report import render_report, sci
from idspn_experiments.autoencoding.tables import GridPoint
from idspn_experiments.runs.results import RunRecord


def test_scientific_notation_as_in_the_paper():
    assert (
        sci(6.0e-5) == "6.0e-5" and sci(0.000123, 0) == "1e-4" and sci(0.32) == "3.2e-1" and sci(float("nan")) == "nan"
    )


def _record(tmp_path, point, seed, loss, step_time):
    run_dir = tmp_path / point.key / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"data": {"train_size": 1280}, "train": {"batch_size": 128}}))
    return RunRecord(
        key=point.key,
        row=point.row,
        column=point.column,
        seed=seed,
        budget="small",
        run_dir=str(run_dir),
        val={},
        test={"loss": loss},
        steps=10,
        best_step=10,
        wall_time_s=1.0,
        step_time_s=step_time,
    )


def test_claims_tables_and_timing_from_records(tmp_path):
    losses = {  # (iters, kind) -> loss at (n, d) = (4, 4), shaped like the paper's results
        (10, "idspn-mom"): 6e-4,
        (10, "idspn"): 1.6e-3,
        (10, "dspn"): 2.0e-3,
        (20, "idspn-mom"): 3.8e-4,
        (20, "idspn"): 9.6e-4,
        (20, "dspn"): 1.1e-3,
        (20, "idspn-mom-sum"): 3.8e-3,
        (20, "idspn-mom-mean"): 5.4e-3,
    }
    records = []
    for (iters, kind), loss in losses.items():
        step = 0.1 * iters / 10 * (2 if kind == "dspn" else 1)
        point = GridPoint(4, 4, iters, kind)
        records += [_record(tmp_path, point, seed, loss * (1 + 0.1 * seed), step) for seed in (0, 1)]
    records.append(_record(tmp_path, GridPoint(4, 4, 10, "idspn-mom-sum"), 0, float("nan"), 0.1))
    text = render_report(records, "small", (0, 1))
    assert "iDSPN+mom has the lowest loss in 2 of 2" in text
    assert "iDSPN is lower than DSPN in 2 of 2" in text
    assert "iDSPN at 2t iterations is lower than DSPN at t in 1 of 1 cells, iDSPN+mom in 1 of 1" in text
    assert "FSPool is lower than both sum and mean pooling in 1 of 1 cells" in text
    assert "DSPN takes 2.00× the time per epoch of iDSPN" in text
    assert "| iDSPN+mom | 10 | 6.3e-4 ± 4e-5 | 5.7e-4 ± 9e-5 |" in text  # ours (2 seeds) beside the paper's
    assert "diverged (1)" in text  # a NaN run is kept out of the mean and counted
    assert "| 4 | 4 | 20 | 2.0 s (0.200 s/step) |" in text
