"""End to end: `idspn reproduce clevr --budget smoke`, one step of the paper config, `idspn data clevr-synth`."""

import json
from pathlib import Path

import pytest

from idspn_experiments.clevr.config import ClevrConfig
from idspn_experiments.clevr.tables import table3_plan, table7_plan
from idspn_experiments.clevr.task import ACCURACY_METRICS, AP_METRICS, CLEVR, IMAGE_AP_METRICS
from idspn_experiments.cli import main
from idspn_experiments.engine.config import load_config
from idspn_experiments.engine.train import fit

FIRST_IMAGE_AP_METRICS = tuple(f"first_{m}" for m in IMAGE_AP_METRICS)


def test_reproduce_smoke_writes_table_3_with_the_papers_numbers(tmp_path: Path, smoke_clevr: Path, capsys):
    out = tmp_path / "clevr"
    assert main(["reproduce", "clevr", "--budget", "smoke", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["reproduction"] == "clevr" and data["budget"] == "smoke" and len(data["runs"]) == 6
    for run in data["runs"]:
        assert (
            set(run["test"]) == {*AP_METRICS, *IMAGE_AP_METRICS, *FIRST_IMAGE_AP_METRICS, "loss", *ACCURACY_METRICS}
            and run["column"] == "run"
        )
    # The paper's iDSPN cells sit beside the original code's per-image AP, Slot Attention's beside the dataset AP.
    cell = next(c for c in data["table"] if c["row"] == "idspn-128" and c["column"] == "image_ap_0.125")
    assert cell["paper"] == {"mean": 76.9, "std": 2.5} and cell["ours"]["n"] == 1
    cell = next(c for c in data["table"] if c["row"] == "idspn-128" and c["column"] == "ap_0.125")
    assert cell["paper"] is None and cell["ours"]["n"] == 1
    cell = next(c for c in data["table"] if c["row"] == "slot-attention-dagger" and c["column"] == "ap_0.125")
    assert cell["paper"] == {"mean": 7.9, "std": 1.0}
    md = (out / "results.md").read_text()
    assert "| Model | AP_∞ (ours) | AP_∞ (paper) |" in md and "AP_∞ per image (ours)" in md
    assert "98.8 ± 0.5" in md and "7.9 ± 1.0" in md
    assert (out / "pictures-idspn.png").stat().st_size > 10_000
    assert (out / "pictures-slot-attention-dagger.png").is_file()
    # Table 7 shares the iDSPN run of Table 3 when written to the same folder
    capsys.readouterr()
    assert (
        main(
            [
                "reproduce",
                "clevr-ablations",
                "--budget",
                "smoke",
                "--out",
                str(out),
                "--no-progress",
                "--rows",
                "idspn-fspool",
                "dspn-m0.5",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "2 runs, 1 finished earlier, 1 to run" in printed and "| DSPN (momentum 0.5) |" in printed


def test_plans_follow_tables_3_and_7():
    paper = {p.row: p for p in table3_plan("paper")}
    assert set(paper) == {
        "slot-mlp",
        "slot-attention",
        "slot-attention-star",
        "slot-attention-dagger",
        "idspn-128",
        "idspn-256",
    }
    assert "data.image_size=256" in paper["idspn-256"].overrides
    assert {
        "model.coord_range=-3..3",
        "model.supervise_all_iters=true",
        "train.batch_size=512",
        "train.steps=200000",
    } <= set(paper["slot-attention-dagger"].overrides)
    assert "idspn-256" not in {p.row for p in table3_plan("small")}
    table7 = {p.row: p for p in table7_plan("paper")}
    assert table7["idspn-fspool"].key == paper["idspn-128"].key
    assert {"model.name=dspn", "model.momentum=0.5"} <= set(table7["dspn-m0.5"].overrides)
    with pytest.raises(ValueError, match="budget must be one of"):
        table3_plan("huge")


def test_one_step_of_the_paper_config_on_cpu(tmp_path: Path, smoke_clevr: Path):
    """The paper's architecture at 128x128 on real-CLEVR-layout data; only the batch and data are tiny."""
    cfg = load_config(
        ClevrConfig,
        "clevr-paper",
        [
            f"data.root={smoke_clevr}",
            "device=cpu",
            "train.steps=1",
            "train.batch_size=4",
            "train.eval_batch_size=4",
            "train.num_workers=0",
            "data.train_size=4",
            "data.val_size=4",
            "data.monitor_size=0",
        ],
    )
    assert cfg.data.image_size == 128 and cfg.model.iters == 20 and cfg.model.iters_final == 40
    result = fit(CLEVR, cfg, tmp_path / "run", progress=False)
    assert (
        result is not None
        and result.steps == 1
        and set(result.test) == {*AP_METRICS, *IMAGE_AP_METRICS, *FIRST_IMAGE_AP_METRICS, "loss", *ACCURACY_METRICS}
    )


def test_data_command_generates_clevr_v1_layout(tmp_path: Path, smoke_clevr: Path, capsys):
    assert main(["data", "clevr-synth", "--out", str(tmp_path), "--train", "1", "--val", "1", "--no-progress"]) == 0
    root = tmp_path / "CLEVR_v1.0"
    assert (root / "images/train/CLEVR_train_000000.png").is_file()
    assert json.loads((root / "scenes/CLEVR_val_scenes.json").read_text())["scenes"][0]["split"] == "val"
    assert main(["data", "clevr-synth", "--out", str(tmp_path), "--train", "-1", "--no-progress"]) == 2
    # --preset prepares (here: finds) the data a preset's runs use
    assert main(["data", "clevr-synth", "--preset", "clevr-smoke", "--no-progress"]) == 0
    assert str(smoke_clevr.parent) in capsys.readouterr().out
    assert main(["data", "clevr-synth", "--preset", "clevr-paper"]) == 2  # real CLEVR: nothing to generate
