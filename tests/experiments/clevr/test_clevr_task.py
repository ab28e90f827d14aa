"""The CLEVR spec: inner-step schedule, loss, pooled AP, config checks."""

import pytest
import torch
from torch import nn

from idspn.metrics import set_average_precision
from idspn_experiments.clevr.config import ClevrConfig
from idspn_experiments.clevr.layout import AP_THRESHOLDS, LAYOUT, targets_to_range
from idspn_experiments.clevr.task import (
    ACCURACY_METRICS,
    AP_METRICS,
    CLEVR,
    IMAGE_AP_METRICS,
    build_model,
    clevr_eval_step,
    clevr_loss,
    clevr_summarize,
    inner_steps,
)
from idspn_experiments.engine.config import load_config


def clevr_average_precision(pred: torch.Tensor, target: torch.Tensor) -> dict:
    return set_average_precision(pred, target, LAYOUT, AP_THRESHOLDS)


FIRST_IMAGE_AP_METRICS = tuple(f"first_{m}" for m in IMAGE_AP_METRICS)


class Oracle(nn.Module):
    """Returns fixed sets, whatever the images (stands in for a perfect model)."""

    def __init__(self, sets: torch.Tensor) -> None:
        super().__init__()
        self.sets = sets
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, images: torch.Tensor, iters: int | None = None) -> torch.Tensor:
        return self.sets + self.weight


def test_inner_steps_switch_from_20_to_40_at_half_of_training():
    cfg = load_config(ClevrConfig, "clevr-paper")
    half = 54688 // 2
    assert [inner_steps(cfg, s) for s in (0, half - 1, half, 54687)] == [20, 20, 40, 40]
    assert inner_steps(cfg, None) == 40
    assert inner_steps(load_config(ClevrConfig, "clevr-paper", ["model.eval_iters=10"]), None) == 10
    assert inner_steps(load_config(ClevrConfig, "clevr-paper", ["model.iters_final=none"]), None) == 20
    cfg = load_config(ClevrConfig, "clevr-smoke", ["model.iters=20", "model.iters_final=40", "train.steps=10"])
    assert [CLEVR.inner_steps(cfg, step) for step in range(10)] == [20] * 5 + [40] * 5


def test_the_engine_passes_the_scheduled_inner_steps_to_the_model(tmp_path):
    import dataclasses

    from idspn_experiments.engine.train import fit

    cfg = load_config(ClevrConfig, "clevr-smoke", ["model.iters=2", "model.iters_final=3", "train.steps=4"])
    seen = []
    original = clevr_loss

    def recording_loss(model, batch, cfg, iters):
        seen.append(iters)
        return original(model, batch, cfg, iters)

    images, targets = torch.rand(4, 3, cfg.data.image_size, cfg.data.image_size), torch.zeros(4, 10, 19)
    targets[:, :3, 18] = 1.0
    experiment = dataclasses.replace(
        CLEVR, loss=recording_loss, build_data=lambda cfg, progress=True: _tiny_splits(images, targets)
    )
    fit(experiment, cfg, tmp_path / "run", progress=False)
    assert seen == [2, 2, 3, 3]


def _tiny_splits(images: torch.Tensor, targets: torch.Tensor):
    from torch.utils.data import TensorDataset

    from idspn_experiments.engine.spec import DataSplits

    data = TensorDataset(images, targets)
    return DataSplits(train=data, val=None, test=data)


def test_paper_schedule_matches_appendix_f3():
    cfg = load_config(ClevrConfig, "clevr-paper")
    t = cfg.train
    epochs = t.steps * t.batch_size / 70000
    assert epochs == pytest.approx(100, abs=0.01) and t.lr == 1e-3 and t.batch_size == 128
    assert t.lr_milestones == [49219] and t.lr_gamma == 0.1  # x0.1 for the last 10 epochs
    assert (cfg.data.image_size, cfg.model.latent_dim, cfg.model.grad_clip) == (128, 512, 10.0)


def test_a_perfect_prediction_has_zero_loss_in_every_range_and_full_ap(smoke_clevr):
    cfg = load_config(ClevrConfig, "clevr-smoke")
    data = CLEVR.build_data(cfg)
    images, targets = map(torch.stack, zip(*[data.test[i] for i in range(8)], strict=True))
    for coord_range in ("0..1", "-1..1", "-3..3"):
        cfg.model.coord_range = coord_range
        oracle = Oracle(targets_to_range(targets, coord_range).flip(1))  # any order of the objects
        loss, _ = clevr_loss(oracle, [images, targets], cfg, 1)
        assert loss.item() == 0.0
        with torch.no_grad():  # as in the engine's evaluation
            outputs = clevr_eval_step(oracle, [images, targets], cfg, 1)
        metrics = clevr_summarize(outputs, cfg)
        assert ACCURACY_METRICS == ("acc_count", "acc_material", "acc_color", "acc_shape", "acc_size", "acc_all")
        assert set(metrics) == {*AP_METRICS, *IMAGE_AP_METRICS, *FIRST_IMAGE_AP_METRICS, "loss", *ACCURACY_METRICS}
        assert set(metrics) == set(CLEVR.metrics)  # what a misspelled train.select_metric is checked against
        assert all(metrics[m] == pytest.approx(1.0) for m in (*AP_METRICS, *IMAGE_AP_METRICS, *ACCURACY_METRICS))
        assert metrics["loss"] == pytest.approx(0, abs=1e-9)


def test_summarize_pools_the_whole_evaluation_set():
    torch.manual_seed(0)
    target = torch.zeros(4, 10, 19)
    target[:, :3, :3] = torch.rand(4, 3, 3) * 2 - 1
    target[:, :3, [3, 5, 13, 16, 18]] = 1.0
    pred = target.clone()
    pred[..., :3] += 0.05 * torch.randn(4, 10, 3)
    pred[..., 18] = torch.rand(4, 10)
    cfg = ClevrConfig()
    pooled = clevr_summarize({"pred": pred, "target": target, "loss": torch.zeros(4)}, cfg)
    whole = clevr_average_precision(pred, target)
    assert pooled["ap_0.125"] == pytest.approx(whole[0.125]) and pooled["ap_inf"] == pytest.approx(whole[float("inf")])
    per_batch = [clevr_average_precision(pred[i : i + 1], target[i : i + 1])[0.125] for i in range(4)]
    assert pooled["ap_0.125"] != pytest.approx(sum(per_batch) / 4)


def test_slot_attention_variants_are_supervised_at_every_iteration():
    cfg = load_config(
        ClevrConfig,
        "clevr-smoke",
        ["model.name=slot_attention", "model.supervise_all_iters=true", "model.coord_range=-3..3"],
    )
    model = build_model(cfg)
    loss, logs = clevr_loss(model, [torch.rand(2, 3, 32, 32), torch.zeros(2, 10, 19)], cfg, 3)
    assert loss.ndim == 0 and "loss_last_iter" in logs
    with pytest.raises(ValueError, match="supervise_all_iters"):
        build_model(load_config(ClevrConfig, "clevr-smoke", ["model.supervise_all_iters=true"]))


def test_deep_supervision_runs_through_a_data_parallel_wrapper(tmp_path):
    """The engine hands the loss its DDP-wrapped model: every-iteration predictions must come through
    the wrapper's forward (which DDP's gradient reduction needs), not a method the wrapper lacks."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    cfg = load_config(ClevrConfig, "clevr-smoke", ["model.name=slot_attention", "model.supervise_all_iters=true"])
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = [torch.rand(2, 3, 32, 32), torch.zeros(2, 10, 19)]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        torch.manual_seed(1)  # the slots start from a random draw
        wrapped_loss, _ = clevr_loss(DistributedDataParallel(model), batch, cfg, 3)
        wrapped_loss.backward()
        wrapped_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    finally:
        dist.destroy_process_group()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    plain_loss, _ = clevr_loss(model, batch, cfg, 3)
    plain_loss.backward()
    torch.testing.assert_close(wrapped_loss, plain_loss)
    plain_grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(wrapped_grads) == len(plain_grads) > 0
    for a, b in zip(wrapped_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_monitoring_the_evaluation_set_forbids_model_selection():
    cfg = load_config(ClevrConfig, "clevr-smoke", ["train.select_metric=ap_inf"])
    with pytest.raises(ValueError, match="'train.select_metric' must be none"):
        CLEVR.build_data(cfg)
    with pytest.raises(ValueError, match="'data.train_size' must be set"):
        CLEVR.build_data(load_config(ClevrConfig, "clevr-smoke", ["data.train_size=none"]))
