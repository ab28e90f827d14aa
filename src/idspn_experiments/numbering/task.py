"""The numbering experiment spec: data, model, class-restricted Hungarian loss, sample accuracy.

Loss (Appendix F.1): the Hungarian loss between the predicted and the target multiset, matching
only elements of the same class (``pred_groups``/``target_groups`` = class ids; the original code
added a penalty of 1e3 to cross-class pairs instead, with the same optimum). Pairwise loss: MSE
for DSPN/iDSPN, cross-entropy for the other models.

Metric: sample-level accuracy. A multiset is correct when every element's argmax ID is right up
to the free choice of which instance of a class gets which ID, i.e. when for every class the
multiset of predicted IDs equals ``{0, ..., count - 1}``. This is the best any matching within
classes can score; the original code scored the matching chosen by the loss, which can only be
lower for soft predictions. ``element_accuracy`` is the fraction of elements correct under the
best such matching.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from idspn import hungarian_loss
from idspn_experiments.engine.spec import DataSplits, Experiment
from idspn_experiments.numbering.config import NumberingConfig
from idspn_experiments.numbering.data import NumberingDataset, one_hot_batch, permute_elements
from idspn_experiments.numbering.models import NUMBERING_MODELS

__all__ = ["NUMBERING", "build_data", "build_model", "numbering_loss", "numbering_eval_step", "sample_correct"]


def build_data(cfg: NumberingConfig, progress: bool = False) -> DataSplits:
    """Train/val/test splits regenerated from ``cfg.seed`` (the same test set for every model)."""
    d = cfg.data

    def split(size: int, name: str) -> NumberingDataset:
        return NumberingDataset(size, d.set_size, d.classes, cfg.seed, name)

    return DataSplits(train=split(d.train_size, "train"), val=split(d.val_size, "val"), test=split(d.test_size, "test"))


def build_model(cfg: NumberingConfig) -> nn.Module:
    """The model named by ``cfg.model.name``."""
    return NUMBERING_MODELS[cfg.model.name].build(cfg)


def _predict(model: nn.Module, inputs: Tensor, cfg: NumberingConfig, iters: int) -> Tensor:
    """``(B, N, C) -> (B, N, N)``: DSPN/iDSPN with ``iters`` inner steps, the other models as they are."""
    return model(inputs, iters=iters) if NUMBERING_MODELS[cfg.model.name].inner_loop else model(inputs)


def numbering_loss(
    model: nn.Module, batch: dict[str, Tensor], cfg: NumberingConfig, iters: int
) -> tuple[Tensor, dict[str, float]]:
    """Class-restricted Hungarian loss of one batch (with random-permutation augmentation if enabled)."""
    if cfg.data.augment:
        batch = permute_elements(batch)
    inputs, targets, labels = one_hot_batch(batch, cfg.data.classes)  # (B, N, C), (B, N, N), (B, N)
    pred = _predict(model, inputs, cfg, iters)  # (B, N, N)
    pairwise = NUMBERING_MODELS[cfg.model.name].pairwise
    loss = hungarian_loss(pred, targets, pairwise=pairwise, pred_groups=labels, target_groups=labels)
    return loss, {}


def sample_correct(pred_ids: Tensor, target_ids: Tensor, labels: Tensor, classes: int) -> tuple[Tensor, Tensor]:
    """Sample- and element-level correctness up to reordering within classes.

    Args:
        pred_ids: ``(B, N)`` predicted IDs (argmax of the output).
        target_ids: ``(B, N)`` target IDs.
        labels: ``(B, N)`` class of every element (shared by prediction and target).
        classes: number of classes C.

    Returns:
        ``correct (B,)`` bool, whether every class's predicted ID multiset equals its target one,
        and ``element_accuracy (B,)`` float, the fraction of elements correct under the best
        within-class matching (the size of the multiset intersection over N).
    """
    set_size = pred_ids.shape[1]
    pred_keys = labels * set_size + pred_ids  # (B, N): (class, ID) pairs as one integer
    target_keys = labels * set_size + target_ids  # (B, N)
    correct = (pred_keys.sort(dim=1).values == target_keys.sort(dim=1).values).all(dim=1)  # (B,)
    bins = classes * set_size
    ones = torch.ones_like(pred_keys, dtype=torch.float32)
    pred_hist = torch.zeros(pred_keys.shape[0], bins, device=pred_keys.device).scatter_add_(1, pred_keys, ones)
    target_hist = torch.zeros(pred_keys.shape[0], bins, device=pred_keys.device).scatter_add_(1, target_keys, ones)
    element_accuracy = torch.minimum(pred_hist, target_hist).sum(dim=1) / set_size  # (B,)
    return correct, element_accuracy


def numbering_eval_step(
    model: nn.Module, batch: dict[str, Tensor], cfg: NumberingConfig, iters: int
) -> dict[str, Tensor]:
    """Per-example ``accuracy`` (0/1), ``element_accuracy`` and the batch's ``loss``."""
    inputs, targets, labels = one_hot_batch(batch, cfg.data.classes)
    pred = _predict(model, inputs, cfg, iters)  # (B, N, N)
    correct, element_accuracy = sample_correct(pred.argmax(dim=-1), batch["ids"], labels, cfg.data.classes)
    pairwise = NUMBERING_MODELS[cfg.model.name].pairwise
    loss = hungarian_loss(pred, targets, pairwise=pairwise, pred_groups=labels, target_groups=labels)
    return {
        "accuracy": correct.float(),
        "element_accuracy": element_accuracy,
        "loss": loss.expand(pred.shape[0]),  # batch mean for every example: averages to the split's loss
    }


NUMBERING: Experiment[NumberingConfig] = Experiment(
    name="numbering",
    config_type=NumberingConfig,
    build_data=build_data,
    build_model=build_model,
    loss=numbering_loss,
    eval_step=numbering_eval_step,
    description="class-specific numbering (Section 4.1, Tables 2 and 4)",
    metrics=("accuracy", "element_accuracy", "loss"),
)
