"""Evaluation metrics for predicted sets of objects, whatever their layout (``ObjectLayout``).

The object-detection average precision ``set_average_precision`` follows Slot Attention's
``average_precision_clevr`` (Locatello et al., 2020), the metric behind every published CLEVR number
that iDSPN compares against:

1. the predicted objects of every image in the evaluation set are pooled and ranked by their
   presence confidence, descending (empty slots are ranked too, there is no cut-off);
2. each prediction is decoded (coordinates, argmax of every attribute group) and compared with the
   present ground-truth objects of its image that have all discrete attributes equal; the nearest
   of those by Euclidean distance of the 3d coordinates in the original units is its candidate;
3. the prediction is a true positive when a candidate exists, its distance is strictly below the
   threshold (or the threshold is infinite) and the candidate has not been claimed by a
   higher-ranked prediction; otherwise it is a false positive (duplicates included);
4. AP is the area under the precision-recall curve with all-point interpolation (PASCAL VOC), the
   recall being divided by the number of present ground-truth objects in the whole set.

The original iDSPN code, which scored the iDSPN rows of the paper's Table 3, computed another
number: ``image_average_precision`` reproduces it. There every image is ranked and scored on its
own (recall over that image's objects), and a prediction removes its nearest candidate from the
image's candidates even when the candidate is beyond the threshold (so a far prediction can use up
an object a later, closer one would have hit); the mean is taken over images. Its logged value
was moreover the mean over evaluation batches of the *first image of each batch* only (its
``compute_ap`` returned inside the loop over the batch): ``every=128`` reproduces that protocol.
The dataset-level AP stays the headline: it is the Slot Attention rows' metric and a proper AP.

One ordering rule holds for every ranking here: by confidence, descending; a NaN confidence ranks
after every number (``-inf`` included); ties (and NaNs among themselves) keep the order of arrival
(image, then slot), so streaming batches through the accumulator gives exactly the one-shot
result. A prediction whose coordinates are NaN or infinite is at no distance from anything: it
hits nothing, at any threshold.

``attribute_accuracy`` reads a low AP: how often the object count and each attribute group are
right, objects paired by their 3d positions (Hungarian matching).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from idspn.matching import batched_assignment

__all__ = [
    "APAccumulator",
    "ObjectLayout",
    "attribute_accuracy",
    "average_precision",
    "confidence_order",
    "image_average_precision",
    "set_average_precision",
]


@dataclass(frozen=True)
class ObjectLayout:
    """Where each part of an object vector lives, so a metric can decode it.

    Attributes:
        coords: Slice of the continuous coordinates.
        attributes: One slice per discrete attribute group; each group is a one-hot (targets) or
            a vector of scores (predictions) decoded by argmax. Empty: positions alone decide a match.
        presence: Index of the presence flag (targets, 1 = real object) or the presence
            confidence (predictions, used for ranking).
        coord_scale: Factor that maps stored coordinates back to the original units in which the
            distance thresholds are given.
    """

    coords: slice  # continuous position, stored as coordinates / coord_scale
    attributes: tuple[slice, ...]  # one-hot groups, decoded by argmax
    presence: int  # index of the presence flag / confidence
    coord_scale: float  # stored coordinates * coord_scale = original units

    def __post_init__(self) -> None:
        parts = [self.coords, *self.attributes, slice(self.presence, self.presence + 1)]
        for part in parts:
            if part.start is None or part.stop is None or part.stop <= part.start or part.step:
                raise ValueError(f"layout slices must have a start < stop and no step; got {part}")
        covered = sorted(i for part in parts for i in range(part.start, part.stop))
        if covered != list(range(len(covered))):
            raise ValueError(
                "layout parts must cover 0..dim-1 exactly once without gaps or overlaps; "
                f"got coords={self.coords}, attributes={self.attributes}, presence={self.presence}"
            )
        if not self.coord_scale > 0:
            raise ValueError(f"coord_scale must be positive; got {self.coord_scale}")

    @property
    def dim(self) -> int:
        """Length of one object vector (the set dimension D)."""
        return 1 + max(self.presence, self.coords.stop - 1, *(a.stop - 1 for a in self.attributes))


def average_precision(true_positive: np.ndarray, num_positives: int) -> float:
    """All-point interpolated average precision of a ranked list (PASCAL VOC).

    Args:
        true_positive: Boolean flags of the ranked detections, best first, ``# (R,)``; every
            detection that is not a true positive is a false positive.
        num_positives: Number of ground-truth objects the recall is divided by.

    Returns:
        The area under the precision-recall curve after making precision non-increasing from the
        right; NaN when ``num_positives`` is 0.
    """
    if num_positives < 0:
        raise ValueError(f"num_positives must be >= 0; got {num_positives}")
    if num_positives == 0:
        return math.nan
    tp = np.cumsum(np.asarray(true_positive, dtype=np.float64))  # (R,)
    ranks = np.arange(1, tp.shape[0] + 1, dtype=np.float64)  # (R,)
    recall = np.concatenate([[0.0], tp / num_positives, [1.0]])  # (R + 2,)
    precision = np.concatenate([[0.0], tp / ranks, [0.0]])  # (R + 2,)
    # Envelope: at each recall level, the best precision reachable at that recall or beyond.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    # Points where recall does not change contribute zero width, so summing everywhere is the same
    # as summing over the change points.
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def confidence_order(confidence: np.ndarray) -> np.ndarray:
    """Indices that rank ``confidence`` ``(R,)`` by the one rule of this module: descending, NaN
    last, ties in the given order."""
    confidence = np.asarray(confidence, dtype=np.float64)
    nan = np.isnan(confidence)
    return np.lexsort((np.arange(len(confidence)), -np.where(nan, -np.inf, confidence), nan))


def _order_within_images(confidence: Tensor) -> Tensor:
    """``(B, N)`` -> ``(B, N)`` slot order of every image under ``confidence_order``."""
    nan = confidence.isnan()
    key = torch.where(nan, torch.full_like(confidence, -math.inf), confidence)
    order = torch.sort(key, dim=1, descending=True, stable=True).indices  # ties by slot
    return order.gather(1, torch.sort(nan.gather(1, order).long(), dim=1, stable=True).indices)  # NaN last


def _check_sets(pred: Tensor, target: Tensor, layout: ObjectLayout) -> None:
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (B, N, {layout.dim}), got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if pred.dim() != 3 or pred.shape[-1] != layout.dim:
        raise ValueError(f"pred must have shape (B, N, {layout.dim}); got {tuple(pred.shape)}")
    if target.dim() != 3 or target.shape[-1] != layout.dim:
        raise ValueError(f"target must have shape (B, M, {layout.dim}); got {tuple(target.shape)}")
    if pred.shape[0] != target.shape[0]:
        raise ValueError(
            f"pred and target must hold the same number of images; got {pred.shape[0]} and {target.shape[0]}"
        )


def _decode_attributes(x: Tensor, layout: ObjectLayout) -> Tensor:
    """Argmax of every attribute group: ``(B, N, D) -> (B, N, G)`` (G = 0: positions alone count)."""
    if not layout.attributes:
        return torch.zeros((*x.shape[:-1], 0), dtype=torch.long, device=x.device)
    return torch.stack([x[..., a].argmax(dim=-1) for a in layout.attributes], dim=-1)


def _distances(pred: Tensor, target: Tensor, layout: ObjectLayout) -> tuple[Tensor, Tensor]:
    """``(B, N, M)`` distances in original units between every prediction and every present target
    with the same attributes (``inf`` for every other pair and for non-finite coordinates), and the
    ``(B, M)`` presence of the targets."""
    same_attributes = (
        _decode_attributes(pred, layout)[:, :, None, :] == _decode_attributes(target, layout)[:, None, :, :]
    ).all(dim=-1)  # (B, N, M)
    present = target[..., layout.presence] != 0  # (B, M)
    offset = (pred[:, :, None, layout.coords] - target[:, None, :, layout.coords]) * layout.coord_scale  # (B, N, M, C)
    distance = offset.square().sum(dim=-1).sqrt()  # (B, N, M), exact (no matmul expansion)
    usable = same_attributes & present[:, None, :] & torch.isfinite(distance)
    return distance.masked_fill(~usable, math.inf), present


@torch.no_grad()
def _true_positives(pred: Tensor, target: Tensor, thresholds: Sequence[float], layout: ObjectLayout) -> Tensor:
    """True-positive flags of every prediction, with greedy claiming inside each image.

    Claiming only interacts between predictions of the same image, and the global ranking orders the
    predictions of one image exactly as ranking that image alone does (ties by slot index), so the
    per-image greedy pass here equals the pass over the pooled evaluation set.

    Args:
        pred: Predicted sets ``# (B, N, D)``.
        target: Ground-truth sets ``# (B, M, D)``.
        thresholds: Distance thresholds in original units (``math.inf`` ignores distance).
        layout: Layout of the object vectors.

    Returns:
        Boolean flags ``# (T, B, N)`` in the original slot order.
    """
    pred = pred.detach().cpu().to(torch.float64)
    target = target.detach().cpu().to(torch.float64)
    b, n, _ = pred.shape
    m = target.shape[1]
    order = _order_within_images(pred[..., layout.presence])  # (B, N)
    pred = torch.gather(pred, 1, order[..., None].expand_as(pred))  # (B, N, D) ranked per image
    distance, _ = _distances(pred, target, layout)  # (B, N, M)
    if m == 0:
        best_distance = torch.full((b, n), math.inf, dtype=torch.float64)
        best = torch.zeros((b, n), dtype=torch.long)
    else:
        best_distance, best = distance.min(dim=-1)  # (B, N), first index on ties

    flags = torch.zeros((len(thresholds), b, n), dtype=torch.bool)
    inverse = torch.argsort(order, dim=1)  # (B, N): ranked position of every original slot
    for i, threshold in enumerate(thresholds):
        hit = best_distance < threshold  # strictly below; any finite distance at threshold inf
        if m == 0:
            continue
        claims = torch.nn.functional.one_hot(best, m).bool() & hit[..., None]  # (B, N, M)
        # A hit is a true positive when no higher-ranked hit of its image claimed the same object.
        first_claim = claims.long().cumsum(dim=1) == 1  # (B, N, M)
        tp_ranked = (claims & first_claim).any(dim=-1)  # (B, N)
        flags[i] = torch.gather(tp_ranked, 1, inverse)
    return flags


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    try:
        thresholds = tuple(float(t) for t in thresholds)
    except (TypeError, ValueError):
        raise ValueError(f"thresholds must be a sequence of positive numbers; got {thresholds!r}") from None
    if not thresholds or any(not t > 0 for t in thresholds):
        raise ValueError(f"thresholds must be a non-empty sequence of positive numbers; got {thresholds}")
    return thresholds


def _check_layout(layout: ObjectLayout) -> None:
    if not isinstance(layout, ObjectLayout):
        raise ValueError(f"layout must be an ObjectLayout, got {type(layout).__name__}")


class APAccumulator:
    """Streams batches of predictions and computes the dataset-level AP (``set_average_precision``).

    Example::

        acc = APAccumulator(LAYOUT, thresholds=(math.inf, 1.0, 0.5))
        for images, target in loader:
            acc.update(model(images), target)
        ap = acc.compute()  # {inf: ..., 1.0: ..., 0.5: ...}

    Args:
        layout: Layout of the object vectors.
        thresholds: Distance thresholds in original units; ``math.inf`` ignores distance.
    """

    def __init__(self, layout: ObjectLayout, thresholds: Sequence[float]) -> None:
        _check_layout(layout)
        self.thresholds = _check_thresholds(thresholds)
        self.layout = layout
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._confidence: list[np.ndarray] = []
        self._true_positive: list[np.ndarray] = []
        self._num_targets = 0

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Adds one batch.

        Args:
            pred: Predicted sets ``# (B, N, D)``; the presence entry is the ranking confidence.
            target: Ground-truth sets ``# (B, M, D)``; objects with a non-zero presence flag count.
        """
        _check_sets(pred, target, self.layout)
        flags = _true_positives(pred, target, self.thresholds, self.layout)  # (T, B, N)
        confidence = pred[..., self.layout.presence].detach().double().cpu()  # (B, N)
        self._confidence.append(confidence.reshape(-1).numpy())
        self._true_positive.append(flags.reshape(len(self.thresholds), -1).numpy())
        self._num_targets += int((target[..., self.layout.presence] != 0).sum())

    def compute(self) -> dict[float, float]:
        """AP at every threshold over all batches seen since the last reset.

        Returns:
            ``{threshold: AP in [0, 1]}``, NaN where no ground-truth object was present.
        """
        if not self._confidence:
            raise ValueError("compute() needs at least one update() with predictions")
        confidence = np.concatenate(self._confidence)  # (R,)
        true_positive = np.concatenate(self._true_positive, axis=1)  # (T, R)
        ranking = confidence_order(confidence)  # (R,)
        return {
            t: average_precision(true_positive[i, ranking], self._num_targets) for i, t in enumerate(self.thresholds)
        }


def set_average_precision(
    pred: Tensor, target: Tensor, layout: ObjectLayout, thresholds: Sequence[float]
) -> dict[float, float]:
    """Object-detection AP of a whole evaluation set (Slot Attention's semantics for CLEVR).

    Args:
        pred: Predicted sets ``# (B, N, D)``; the presence entry is the ranking confidence.
        target: Ground-truth sets ``# (B, M, D)``; objects with a non-zero presence flag count.
        layout: Layout of the object vectors.
        thresholds: Distance thresholds in original units; ``math.inf`` ignores distance.

    Returns:
        ``{threshold: AP in [0, 1]}``, NaN where no ground-truth object was present.
    """
    accumulator = APAccumulator(layout, thresholds)
    accumulator.update(pred, target)
    return accumulator.compute()


@torch.no_grad()
def image_average_precision(
    pred: Tensor, target: Tensor, layout: ObjectLayout, thresholds: Sequence[float], every: int = 1
) -> dict[float, float]:
    """The original iDSPN code's CLEVR AP (the paper's Table 3 iDSPN rows): a mean of per-image APs.

    In every image on its own: the predictions are ranked by confidence (this module's rule); each
    takes the nearest present ground-truth object with the same attributes among those still
    available and removes it from them, whatever the distance; it is a true positive when that
    distance is strictly below the threshold (any finite distance at ``inf``), otherwise, or without
    a candidate, a false positive; the image's AP divides recall by its own number of objects
    (all-point interpolation, as ``average_precision``). Images without objects have no AP and
    are left out of the mean.

    Args:
        pred: Predicted sets ``# (B, N, D)``; the presence entry is the ranking confidence.
        target: Ground-truth sets ``# (B, M, D)``; objects with a non-zero presence flag count.
        layout: Layout of the object vectors.
        thresholds: Distance thresholds in original units; ``math.inf`` ignores distance.
        every: score images ``0, every, 2 * every, ...`` only: 128 is the original's protocol, the
            first image of every evaluation batch of 128.

    Returns:
        ``{threshold: mean AP in [0, 1]}``, NaN where no scored image has an object.
    """
    _check_layout(layout)
    _check_sets(pred, target, layout)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive int, got {every!r}")
    thresholds = _check_thresholds(thresholds)
    pred = pred.detach().cpu().to(torch.float64)[::every]
    target = target.detach().cpu().to(torch.float64)[::every]
    order = _order_within_images(pred[..., layout.presence])  # (B, N)
    pred = torch.gather(pred, 1, order[..., None].expand_as(pred))  # ranked per image
    distance, present = _distances(pred, target, layout)  # (B, N, M)
    b, n, m = distance.shape
    available = present.clone()  # (B, M): candidates not yet removed
    nearest = torch.full((b, n), math.inf, dtype=torch.float64)  # (B, N) distance of each one's pick
    for rank in range(n):
        d = distance[:, rank].masked_fill(~available, math.inf)  # (B, M)
        if m == 0:
            break
        best_distance, best = d.min(dim=1)  # first index on ties
        found = torch.isfinite(best_distance)
        nearest[:, rank] = best_distance
        available[found, best[found]] = False  # removed, whether within the threshold or not
    counts = present.sum(dim=1)  # (B,)
    out = {}
    for t in thresholds:
        aps = [average_precision((nearest[i] < t).numpy(), int(counts[i])) for i in range(b) if counts[i] > 0]
        out[t] = float(np.mean(aps)) if aps else math.nan
    return out


@torch.no_grad()
def attribute_accuracy(
    pred: Tensor, target: Tensor, layout: ObjectLayout, names: Sequence[str] | None = None
) -> dict[str, float]:
    """Where the errors behind a low AP are: object counts and each attribute group, objects paired by 3d position.

    In every image the confidently predicted objects (presence > 0.5) and the present ground-truth
    objects are paired one-to-one with the least total 3d distance (Hungarian); objects left over
    on the side with more are not paired. Unlike AP, this ignores the ranking and the distance.
    Non-finite coordinates (a diverged model) count as far from everything, never as an error.

    Args:
        pred: Predicted sets ``# (B, N, D)``.
        target: Ground-truth sets ``# (B, M, D)``; objects with a non-zero presence flag count.
        layout: Layout of the object vectors.
        names: Key of each attribute group, in the order of ``layout.attributes`` (default
            ``"group0"``, ``"group1"``, ...).

    Returns:
        ``"count"``: fraction of images with as many confident predictions as objects; per group
        name: fraction of pairs whose attribute group decodes to the target's; ``"all"``: fraction
        of pairs with every group right. NaN where nothing was paired.
    """
    _check_layout(layout)
    _check_sets(pred, target, layout)
    names = [f"group{i}" for i in range(len(layout.attributes))] if names is None else list(names)
    if len(names) != len(layout.attributes) or len(set(names)) != len(names) or {"count", "all"} & set(names):
        raise ValueError(
            f"names must give the {len(layout.attributes)} attribute groups distinct keys other than "
            f"'count' and 'all'; got {names}"
        )
    size = max(pred.shape[1], target.shape[1])  # pad both to (B, size, D) with absent objects
    pred = torch.nn.functional.pad(pred.float(), (0, 0, 0, size - pred.shape[1]))  # (B, S, D)
    target = torch.nn.functional.pad(target.float(), (0, 0, 0, size - target.shape[1]))  # (B, S, D)
    confident = pred[..., layout.presence] > 0.5  # (B, S)
    present = target[..., layout.presence] != 0  # (B, S)
    valid = confident.unsqueeze(2) & present.unsqueeze(1)  # (B, S, S)
    far = 1e3  # farther than any finite pair of real objects; invalid pairs cost more than S such pairs
    distance = torch.cdist(pred[..., layout.coords], target[..., layout.coords])  # (B, S, S)
    distance = torch.nan_to_num(distance, nan=far, posinf=far).clamp_max(far)
    cost = torch.where(valid, distance, distance.new_tensor(far * (size + 1)))  # (B, S, S)
    col = batched_assignment(cost)  # (B, S)
    paired = valid.gather(2, col.unsqueeze(2)).squeeze(2)  # (B, S)
    matched = target.gather(1, col.unsqueeze(2).expand_as(target))  # (B, S, D)
    right = _decode_attributes(pred, layout) == _decode_attributes(matched, layout)  # (B, S, G)
    right = right[paired]  # (P, G)
    out = {"count": float((confident.sum(1) == present.sum(1)).double().mean())}
    for i, name in enumerate(names):
        out[name] = float(right[:, i].double().mean()) if len(right) else math.nan
    out["all"] = float(right.all(dim=1).double().mean()) if len(right) else math.nan
    return out
