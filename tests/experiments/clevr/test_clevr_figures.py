"""The CLEVR pictures: TensorBoard's val/predictions during a run."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from idspn_experiments.clevr.config import ClevrConfig
from idspn_experiments.clevr.task import CLEVR
from idspn_experiments.engine.config import load_config
from idspn_experiments.engine.train import fit


def test_clevr_draws_its_predictions(tmp_path, smoke_clevr):
    cfg = load_config(ClevrConfig, "clevr-smoke", [f"data.root={smoke_clevr}", "train.tensorboard=true"])
    fit(CLEVR, cfg, tmp_path / "run", progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["val/predictions"]
    (picture,) = events.Images("val/predictions")
    assert picture.step == 2 and picture.width > 100 and picture.height > 100
    assert {"val/ap_inf", "test/image_ap_inf", "inner/final_grad_norm"} <= set(events.Tags()["scalars"])
