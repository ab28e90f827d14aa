"""The CLEVR experiment spec: models, Hungarian Huber loss, the inner-step schedule and pooled AP.

Loss (Appendix F.3): the Hungarian loss (Eq. 44) with the Huber loss as pairwise loss, between the
predicted set and the target set with its coordinates in the model's ``coord_range``; Slot
Attention with ``supervise_all_iters`` averages it over the prediction after every iteration.

Schedule (Appendix F.3, ``inner_steps``): iDSPN/DSPN train with ``iters`` inner steps, raised to
``iters_final`` from step ``round(iters_switch * train.steps)`` on (20 -> 40 after 50 of 100
epochs); evaluation uses ``eval_iters`` (default: the count of the end of training), so ``idspn
eval`` of a checkpoint gives the reported numbers, and ``model.eval_iters=10`` the evaluation at 10
steps of Tables 9 and 10.

Metric: average precision at the distance thresholds of Table 3 with Slot Attention's semantics
(:func:`idspn.metrics.set_average_precision`), computed in ``summarize`` over the predictions of the
*whole* evaluation set (all processes gathered), never per batch. Metric names: ``ap_inf``,
``ap_1``, ``ap_0.5``, ``ap_0.25``, ``ap_0.125``, ``ap_0.0625`` (fractions in [0, 1]) and ``loss``.
Beside them the AP the original iDSPN code computed, which scored the paper's iDSPN cells
(:func:`idspn.metrics.image_average_precision`): ``image_ap_*``, the mean of per-image APs over every
evaluation image, and ``first_image_ap_*``, the same over the first image of every batch of
``ORIGINAL_EVAL_BATCH`` (128) images only, the original's exact protocol. Alongside, to show which
part of a prediction fails (:func:`idspn.metrics.attribute_accuracy`): ``acc_count`` (images with
the right number of confident objects) and, over objects paired by 3d position, ``acc_material``,
``acc_color``, ``acc_shape``, ``acc_size`` and ``acc_all``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from idspn import hungarian_loss
from idspn.metrics import attribute_accuracy, image_average_precision, set_average_precision
from idspn_experiments.clevr.config import ClevrConfig
from idspn_experiments.clevr.data import build_data
from idspn_experiments.clevr.layout import (
    AP_THRESHOLDS,
    ATTRIBUTE_NAMES,
    LAYOUT,
    MAX_OBJECTS,
    SET_DIM,
    from_range,
    targets_to_range,
)
from idspn_experiments.clevr.models import ClevrIDSPN
from idspn_experiments.clevr.slot_attention import SlotAttentionPredictor, SlotMLPPredictor
from idspn_experiments.engine.spec import DataSplits, Experiment, ModelEntry

__all__ = [
    "CLEVR_MODELS",
    "ACCURACY_METRICS",
    "AP_METRICS",
    "IMAGE_AP_METRICS",
    "ORIGINAL_EVAL_BATCH",
    "ap_metric_name",
    "build_model",
    "inner_steps",
    "predict",
    "clevr_loss",
    "clevr_eval_step",
    "clevr_summarize",
    "CLEVR",
]


def _build_idspn(cfg: ClevrConfig, backward: str) -> nn.Module:
    m = cfg.model
    return ClevrIDSPN(
        image_size=cfg.data.image_size,
        set_size=MAX_OBJECTS,
        set_dim=SET_DIM,
        latent_dim=m.latent_dim,
        hidden_dim=m.hidden_dim,
        pooling=m.pooling,
        iters=m.iters,
        lr=m.lr,
        momentum=m.momentum,
        grad_clip=m.grad_clip,
        init_std=m.init_std,
        backward=backward,
        fspool_init=m.fspool_init,
        compile=m.compile,
    )


def _build_slot_attention(cfg: ClevrConfig) -> nn.Module:
    m = cfg.model
    return SlotAttentionPredictor(
        cfg.data.image_size,
        MAX_OBJECTS,
        SET_DIM,
        m.coord_range,
        m.encoder_channels,
        m.slot_dim,
        m.slot_iters,
        m.slot_hidden_dim,
    )


def _build_slot_mlp(cfg: ClevrConfig) -> nn.Module:
    m = cfg.model
    return SlotMLPPredictor(
        cfg.data.image_size, MAX_OBJECTS, SET_DIM, m.coord_range, m.encoder_channels, m.slot_dim, m.mlp_pool
    )


CLEVR_MODELS: dict[str, ModelEntry] = {
    "idspn": ModelEntry("iDSPN", lambda cfg: _build_idspn(cfg, "approx"), inner_loop=True),
    "dspn": ModelEntry("DSPN", lambda cfg: _build_idspn(cfg, "unroll"), inner_loop=True),
    "slot_attention": ModelEntry("Slot Attention", _build_slot_attention),
    "slot_mlp": ModelEntry("Slot MLP", _build_slot_mlp),
}


def ap_metric_name(threshold: float) -> str:
    """``ap_inf``, ``ap_1``, ``ap_0.5``, ...: the metric name of a distance threshold."""
    return "ap_inf" if math.isinf(threshold) else f"ap_{threshold:g}"


AP_METRICS: tuple[str, ...] = tuple(ap_metric_name(t) for t in AP_THRESHOLDS)
IMAGE_AP_METRICS: tuple[str, ...] = tuple(f"image_{name}" for name in AP_METRICS)  # the original code's AP
ORIGINAL_EVAL_BATCH = 128  # the original scored the first image of every validation batch of this size


def accuracy_metric_name(key: str) -> str:
    """``acc_count``, ``acc_color``, ``acc_all``, ...: the metric name of an ``attribute_accuracy`` key."""
    return f"acc_{key}"


ACCURACY_METRICS: tuple[str, ...] = tuple(accuracy_metric_name(k) for k in ("count", *ATTRIBUTE_NAMES, "all"))


def build_model(cfg: ClevrConfig) -> nn.Module:
    """The model named by ``cfg.model.name``; ValueError for options it cannot honour."""
    if cfg.model.supervise_all_iters and cfg.model.name != "slot_attention":
        raise ValueError(
            f"config key 'model.supervise_all_iters': true needs model.name='slot_attention', got {cfg.model.name!r}"
        )
    return CLEVR_MODELS[cfg.model.name].build(cfg)


def inner_steps(cfg: ClevrConfig, step: int | None) -> int:
    """Inner steps at training step ``step`` (0-based): ``iters``, then ``iters_final`` (Appendix
    F.3); at evaluation (``step=None``): ``eval_iters``, else those of the last training step."""
    m = cfg.model
    if step is None:
        return m.eval_iters if m.eval_iters is not None else inner_steps(cfg, max(cfg.train.steps - 1, 0))
    if m.iters_final is not None and step >= round(m.iters_switch * cfg.train.steps):
        return m.iters_final
    return m.iters


def _in_range(model: nn.Module, images: Tensor, cfg: ClevrConfig, iters: int) -> Tensor:
    """The model's prediction ``(B, N, D)`` with coordinates in its ``coord_range``."""
    if CLEVR_MODELS[cfg.model.name].inner_loop:
        return model(images, iters=iters)
    return model(images)


def predict(model: nn.Module, images: Tensor, cfg: ClevrConfig, iters: int | None = None) -> Tensor:
    """Predicted sets ``(B, N, D)`` in the stored layout (coordinates in [-1, 1]), ready for the metric.

    Args:
        model: a model built from ``cfg``.
        images: ``(B, 3, S, S)``.
        iters: inner steps for iDSPN/DSPN (default ``inner_steps(cfg, None)``); ignored by the baselines.
    """
    return from_range(
        _in_range(model, images, cfg, inner_steps(cfg, None) if iters is None else iters), cfg.model.coord_range
    )


def clevr_loss(model: nn.Module, batch: list[Tensor], cfg: ClevrConfig, iters: int) -> tuple[Tensor, dict[str, float]]:
    """Hungarian Huber loss (Eq. 44) of a batch ``[images (B, 3, S, S), targets (B, N, D)]``."""
    images, targets = batch
    targets = targets_to_range(targets, cfg.model.coord_range)  # (B, N, D)
    if cfg.model.supervise_all_iters:
        preds = model(images, all_iters=True)  # (T, B, N, D)
        per_iter = [hungarian_loss(pred, targets, pairwise="huber") for pred in preds]
        return torch.stack(per_iter).mean(), {"loss_last_iter": float(per_iter[-1].detach())}
    return hungarian_loss(_in_range(model, images, cfg, iters), targets, pairwise="huber"), {}


def clevr_eval_step(model: nn.Module, batch: list[Tensor], cfg: ClevrConfig, iters: int) -> dict[str, Tensor]:
    """Per-image predictions and targets (stored layout) for the pooled AP, and the batch's loss."""
    images, targets = batch
    pred = _in_range(model, images, cfg, iters)  # (B, N, D), coordinates in the model's range
    loss = hungarian_loss(pred, targets_to_range(targets, cfg.model.coord_range), pairwise="huber")
    return {"pred": from_range(pred, cfg.model.coord_range), "target": targets, "loss": loss.expand(pred.shape[0])}


def clevr_summarize(outputs: dict[str, Tensor], cfg: ClevrConfig) -> dict[str, float]:
    """AP at every threshold over the whole evaluation set (Slot Attention's semantics), the
    original code's per-image APs, the mean loss and the ``acc_*`` accuracies."""
    pred, target = outputs["pred"], outputs["target"]
    ap = set_average_precision(pred, target, LAYOUT, AP_THRESHOLDS)
    metrics = {ap_metric_name(t): value for t, value in ap.items()}
    per_image = image_average_precision(pred, target, LAYOUT, AP_THRESHOLDS)
    metrics |= {f"image_{ap_metric_name(t)}": value for t, value in per_image.items()}
    first = image_average_precision(pred, target, LAYOUT, AP_THRESHOLDS, every=ORIGINAL_EVAL_BATCH)
    metrics |= {f"first_image_{ap_metric_name(t)}": value for t, value in first.items()}
    accuracy = attribute_accuracy(pred, target, LAYOUT, ATTRIBUTE_NAMES)
    metrics |= {accuracy_metric_name(key): value for key, value in accuracy.items()}
    metrics["loss"] = float(outputs["loss"].double().mean())
    return metrics


def predictions_figure(model: nn.Module, data: DataSplits, cfg: ClevrConfig) -> Any:
    """TensorBoard's ``val/predictions``: ``clevr.figures.validation_figure`` (imported when drawn)."""
    from idspn_experiments.clevr.figures import validation_figure

    return validation_figure(model, data, cfg)


CLEVR: Experiment[ClevrConfig] = Experiment(
    name="clevr",
    config_type=ClevrConfig,
    build_data=build_data,
    build_model=build_model,
    loss=clevr_loss,
    eval_step=clevr_eval_step,
    summarize=clevr_summarize,
    inner_steps=inner_steps,
    figure=predictions_figure,
    description="CLEVR object property prediction (Section 4.3, Tables 3 and 7)",
    metrics=(
        *AP_METRICS,
        *IMAGE_AP_METRICS,
        *(f"first_{name}" for name in IMAGE_AP_METRICS),
        *ACCURACY_METRICS,
        "loss",
    ),
)
