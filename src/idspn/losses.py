"""Hungarian (set matching) losses, Eq. 44.

The loss between a predicted and a target multiset is the mean pairwise loss under the optimal
one-to-one matching. Matching runs without gradient on the pairwise cost matrix (computed in float64
whatever the inputs' precision, so that half-precision inputs and large values match exactly); the
loss is then an ordinary differentiable function of the matched pairs, in the inputs' dtype. Under a
mask, whatever padded elements hold (inf, NaN, garbage) changes neither the matching nor the loss.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .matching import batched_assignment

__all__ = ["PairwiseLoss", "PAIRWISE_LOSSES", "hungarian_match", "hungarian_loss"]


@dataclass(frozen=True)
class PairwiseLoss:
    """A loss between two elements, as an all-pairs cost matrix and along matched pairs.

    Attributes:
        cost: ``(B, N, D), (B, M, D) -> (B, N, M)`` loss of every prediction-target pair.
        matched: ``(B, N, D), (B, N, D) -> (B, N)`` loss of aligned pairs.
    """

    cost: Callable[[Tensor, Tensor], Tensor]
    matched: Callable[[Tensor, Tensor], Tensor]


def _mse_matched(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).pow(2).mean(-1)


def _mse_cost(pred: Tensor, target: Tensor) -> Tensor:
    dist = torch.cdist(pred, target, compute_mode="donot_use_mm_for_euclid_dist")  # (B, N, M)
    return dist.pow(2) / pred.shape[-1]


def _huber_matched(pred: Tensor, target: Tensor) -> Tensor:
    diff = (pred - target).abs()  # broadcasts, unlike F.smooth_l1_loss
    return torch.where(diff < 1, 0.5 * diff.pow(2), diff - 0.5).mean(-1)


def _huber_cost(pred: Tensor, target: Tensor) -> Tensor:
    return _huber_matched(pred.unsqueeze(2), target.unsqueeze(1))  # (B, N, M)


def _cross_entropy_matched(logits: Tensor, target: Tensor) -> Tensor:
    return -(target * logits.log_softmax(-1)).sum(-1)


def _cross_entropy_cost(logits: Tensor, target: Tensor) -> Tensor:
    return -logits.log_softmax(-1) @ target.transpose(1, 2)  # (B, N, M)


PAIRWISE_LOSSES: dict[str, PairwiseLoss] = {
    # squared error, mean over element dims
    "mse": PairwiseLoss(_mse_cost, _mse_matched),
    # Huber / smooth L1 (quadratic below 1, linear above), mean over element dims
    "huber": PairwiseLoss(_huber_cost, _huber_matched),
    # predictions are logits, targets one-hot or probability vectors
    "cross_entropy": PairwiseLoss(_cross_entropy_cost, _cross_entropy_matched),
}


def _resolve(pairwise: str | PairwiseLoss) -> PairwiseLoss:
    if isinstance(pairwise, PairwiseLoss):
        return pairwise
    if pairwise not in PAIRWISE_LOSSES:
        raise ValueError(f"pairwise must be a PairwiseLoss or one of {tuple(PAIRWISE_LOSSES)}, got {pairwise!r}")
    return PAIRWISE_LOSSES[pairwise]


def _describe(x: object) -> str:
    return f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else f"a {type(x).__name__}"


def _check(
    pred: Tensor, target: Tensor, mask: Tensor | None, pred_groups: Tensor | None, target_groups: Tensor | None
) -> None:
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            dtype = f" {x.dtype}" if isinstance(x, Tensor) else ""
            raise ValueError(f"{name} must be a floating tensor of shape (B, N, D), got{dtype} {shape}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name} must hold non-empty sets, got shape {tuple(x.shape)}")
        if x.is_meta:
            raise ValueError(f"{name} is a meta tensor: matching needs values")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape (B, N, D), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.dtype != target.dtype:
        raise ValueError(f"pred and target must have the same dtype, got {pred.dtype} and {target.dtype}")
    if mask is not None and (not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != pred.shape[:2]):
        raise ValueError(f"mask must be a bool tensor of shape (B, N)={tuple(pred.shape[:2])}, got {_describe(mask)}")
    if (pred_groups is None) != (target_groups is None):
        raise ValueError("pred_groups and target_groups must be given together")
    for name, g in (("pred_groups", pred_groups), ("target_groups", target_groups)):
        if g is not None and (not isinstance(g, Tensor) or g.shape != pred.shape[:2] or g.is_floating_point()):
            raise ValueError(
                f"{name} must be an integer tensor of shape (B, N)={tuple(pred.shape[:2])}, got {_describe(g)}"
            )


def _group_count_mismatch(pred_groups: Tensor, target_groups: Tensor, mask: Tensor | None) -> str | None:
    """Why no same-group matching exists: the first example and group whose present predictions and
    targets differ in number, or None. Read only after a matching failed (host syncs, Python loop)."""
    present = torch.ones_like(pred_groups, dtype=torch.bool) if mask is None else mask
    for b in range(pred_groups.shape[0]):
        counts = [Counter(g[b][present[b]].tolist()) for g in (pred_groups, target_groups)]
        for group in sorted(counts[0].keys() | counts[1].keys()):
            if counts[0][group] != counts[1][group]:
                return (
                    f"pred_groups and target_groups of example {b} must hold each group equally often (only "
                    f"same-group elements are matched); group {group} has {counts[0][group]} "
                    f"predictions and {counts[1][group]} targets"
                )
    return None


def _present(x: Tensor, mask: Tensor | None) -> Tensor:
    """``x`` with padded elements zeroed: padding values never reach the arithmetic."""
    return x if mask is None else torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _check_finite(pred: Tensor, target: Tensor) -> None:
    for name, x in (("pred", pred), ("target", target)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or inf in present elements; matching needs finite values")


@torch.no_grad()
def hungarian_match(
    pred: Tensor,
    target: Tensor,
    pairwise: str | PairwiseLoss = "mse",
    mask: Tensor | None = None,
    pred_groups: Tensor | None = None,
    target_groups: Tensor | None = None,
) -> Tensor:
    """Optimal matching of predictions to targets under a pairwise loss.

    Args:
        pred: ``(B, N, D)`` predicted sets.
        target: ``(B, N, D)`` target sets.
        pairwise: ``"mse"``, ``"huber"``, ``"cross_entropy"`` or a ``PairwiseLoss``.
        mask: ``(B, N)`` bool, present elements of both sets (padded sets must have equally many
            present predictions and targets); padding is matched to padding.
        pred_groups, target_groups: ``(B, N)`` integer group of every element (e.g. the class in
            the numbering task); elements of different groups are never matched.

    Returns:
        ``(B, N)`` long: index of the target matched to each prediction.
    """
    _check(pred, target, mask, pred_groups, target_groups)
    pred, target = _present(pred.detach(), mask).double(), _present(target.detach(), mask).double()
    _check_finite(pred, target)
    cost = _resolve(pairwise).cost(pred, target)  # (B, N, N) float64
    if pred_groups is not None and target_groups is not None:  # _check: both or neither
        cost = cost.masked_fill(pred_groups.unsqueeze(2) != target_groups.unsqueeze(1), float("inf"))
    if mask is not None:
        both = mask.unsqueeze(2) & mask.unsqueeze(1)
        neither = ~mask.unsqueeze(2) & ~mask.unsqueeze(1)
        cost = cost.masked_fill(~both, float("inf")).masked_fill(neither, 0.0)
    try:
        return batched_assignment(cost)
    except ValueError:
        mismatch = None
        if pred_groups is not None and target_groups is not None:
            mismatch = _group_count_mismatch(pred_groups, target_groups, mask)
        if mismatch is None:
            raise
        raise ValueError(mismatch) from None


def hungarian_loss(
    pred: Tensor,
    target: Tensor,
    pairwise: str | PairwiseLoss = "mse",
    mask: Tensor | None = None,
    pred_groups: Tensor | None = None,
    target_groups: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Hungarian loss (Eq. 44): pairwise loss of optimally matched elements, averaged (or not).

    Arguments as in ``hungarian_match``, and ``reduction``: ``"mean"`` over the present elements
    of the batch, or ``"none"``. Gradients flow into ``pred`` (and ``target``) through the matched
    pairs; the matching itself is piecewise constant.

    Returns:
        Scalar tensor, or with ``reduction="none"`` the ``(B, N)`` loss of every prediction with
        its matched target (0 for padding).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    loss_fn = _resolve(pairwise)
    index = hungarian_match(pred, target, loss_fn, mask, pred_groups, target_groups)  # (B, N)
    pred, target = _present(pred, mask), _present(target, mask)
    matched = target.gather(1, index.unsqueeze(-1).expand(-1, -1, target.shape[-1]))  # (B, N, D)
    per_element = loss_fn.matched(pred, matched)  # (B, N)
    if reduction == "none":
        return per_element if mask is None else per_element * mask
    if mask is None:
        return per_element.mean()
    return (per_element * mask).sum() / mask.sum().clamp(min=1)
