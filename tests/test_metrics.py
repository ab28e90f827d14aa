"""Tests for idspn.metrics: CLEVR average precision with Slot Attention's semantics."""

import math

import numpy as np
import pytest
import torch

from idspn.metrics import (
    APAccumulator,
    ObjectLayout,
    attribute_accuracy,
    average_precision,
    confidence_order,
    set_average_precision,
)
from idspn.metrics import image_average_precision as _image_average_precision

# The metric is generic over layouts; these tests use CLEVR's (DSPN's): 3d coordinates / 3,
# material (2), colour (8), shape (3), size (2), presence, and the thresholds of the paper's Table 3.
CLEVR_LAYOUT = ObjectLayout(
    coords=slice(0, 3),
    attributes=(slice(3, 5), slice(5, 13), slice(13, 16), slice(16, 18)),
    presence=18,
    coord_scale=3.0,
)
CLEVR_AP_THRESHOLDS = (math.inf, 1.0, 0.5, 0.25, 0.125, 0.0625)


def clevr_average_precision(pred, target, thresholds=CLEVR_AP_THRESHOLDS, layout=CLEVR_LAYOUT):
    return set_average_precision(pred, target, layout, thresholds)


def image_average_precision(pred, target, thresholds=CLEVR_AP_THRESHOLDS, layout=CLEVR_LAYOUT, every=1):
    return _image_average_precision(pred, target, layout, thresholds, every)


def ClevrAPAccumulator(thresholds=CLEVR_AP_THRESHOLDS, layout=CLEVR_LAYOUT):  # noqa: N802
    return APAccumulator(layout, thresholds)


def obj(
    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0),
    attrs: tuple[int, int, int, int] = (0, 0, 0, 0),
    presence: float = 1.0,
) -> torch.Tensor:
    """One object vector in CLEVR_LAYOUT; ``xyz`` in stored units (original / 3)."""
    x = torch.zeros(CLEVR_LAYOUT.dim, dtype=torch.float64)
    x[CLEVR_LAYOUT.coords] = torch.tensor(xyz, dtype=torch.float64)
    for group, index in zip(CLEVR_LAYOUT.attributes, attrs, strict=True):
        x[group.start + index] = 1.0
    x[CLEVR_LAYOUT.presence] = presence
    return x


def sets(*images: list[torch.Tensor]) -> torch.Tensor:
    """Stacks lists of object vectors (padded with zeros) into ``(B, N, D)``."""
    n = max(len(objects) for objects in images)
    out = torch.zeros(len(images), n, CLEVR_LAYOUT.dim, dtype=torch.float64)
    for b, objects in enumerate(images):
        for i, o in enumerate(objects):
            out[b, i] = o
    return out


A = obj((0.1, 0.2, 0.1), (0, 1, 2, 0))
B = obj((-0.5, 0.3, 0.2), (1, 4, 0, 1))
C = obj((0.6, -0.6, 0.1), (1, 7, 1, 0))


def with_confidence(x: torch.Tensor, confidence: float) -> torch.Tensor:
    x = x.clone()
    x[CLEVR_LAYOUT.presence] = confidence
    return x


def reference_ap(pred: torch.Tensor, target: torch.Tensor, threshold: float) -> float:
    """Plain-loop transcription of the metric's definition, to compare the vectorised one with."""
    lay = CLEVR_LAYOUT
    entries = [(float(pred[b, n, lay.presence]), b, n) for b in range(pred.shape[0]) for n in range(pred.shape[1])]
    ranked = sorted(range(len(entries)), key=lambda i: -entries[i][0])  # stable
    claimed: set[tuple[int, int]] = set()
    flags = []
    for i in ranked:
        _, b, n = entries[i]
        attrs = [int(pred[b, n, g].argmax()) for g in lay.attributes]
        best, best_distance = None, math.inf
        for m in range(target.shape[1]):
            if target[b, m, lay.presence] == 0:
                continue
            if attrs != [int(target[b, m, g].argmax()) for g in lay.attributes]:
                continue
            d = float(torch.linalg.norm((pred[b, n, lay.coords] - target[b, m, lay.coords]) * 3.0))
            if d < best_distance:
                best, best_distance = m, d
        if best is not None and (math.isinf(threshold) or best_distance < threshold):
            flags.append((b, best) not in claimed)
            claimed.add((b, best))
        else:
            flags.append(False)
    num_targets = int((target[..., lay.presence] != 0).sum())
    tp = np.cumsum(flags)
    recall = [0.0] + list(tp / num_targets) + [1.0]
    precision = [0.0] + list(tp / np.arange(1, len(tp) + 1)) + [0.0]
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    return sum(
        (recall[i + 1] - recall[i]) * precision[i + 1] for i in range(len(recall) - 1) if recall[i + 1] != recall[i]
    )


def random_sets(generator: torch.Generator, b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets with 3..n objects and noisy, partly wrong predictions with random confidence."""
    lay = CLEVR_LAYOUT
    target = torch.zeros(b, n, lay.dim, dtype=torch.float64)
    for i in range(b):
        k = int(torch.randint(3, n + 1, (1,), generator=generator))
        for j in range(k):
            attrs = [int(torch.randint(g.stop - g.start, (1,), generator=generator)) for g in lay.attributes]
            xyz = (torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1).tolist()
            target[i, j] = obj(tuple(xyz), tuple(attrs))
    pred = target.clone()
    pred[..., lay.coords] += 0.05 * torch.randn(b, n, 3, generator=generator, dtype=torch.float64)
    scores = torch.randn(b, n, lay.dim, generator=generator, dtype=torch.float64)
    pred[..., 3:18] += 0.6 * scores[..., 3:18]  # some attributes flip
    # Quantised confidences create ties across and within images.
    pred[..., lay.presence] = torch.randint(0, 8, (b, n), generator=generator).double() / 8
    return pred, target


def test_perfect_predictions_score_one_everywhere() -> None:
    target = sets([A, B, C], [B], [C, A])
    ap = clevr_average_precision(target.clone(), target)
    assert set(ap) == set(CLEVR_AP_THRESHOLDS)
    assert all(v == pytest.approx(1.0) for v in ap.values())


def test_one_wrong_colour_is_a_false_positive_and_misses_its_object() -> None:
    wrong = B.clone()
    wrong[CLEVR_LAYOUT.attributes[1]] = torch.eye(8, dtype=torch.float64)[5]
    target = sets([A, B])
    # Ranked: A (TP), wrong B (FP) -> recall 0.5 at precision 1.
    pred = sets([with_confidence(A, 0.9), with_confidence(wrong, 0.8)])
    assert clevr_average_precision(pred, target)[math.inf] == pytest.approx(0.5)
    # Ranked: wrong B (FP), A (TP) -> recall 0.5 at precision 0.5.
    pred = sets([with_confidence(A, 0.8), with_confidence(wrong, 0.9)])
    assert clevr_average_precision(pred, target)[math.inf] == pytest.approx(0.25)


def test_duplicate_prediction_is_a_false_positive() -> None:
    target = sets([A, B])
    pred = sets([with_confidence(A, 0.9), with_confidence(A, 0.8), with_confidence(B, 0.7)])
    # TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3.
    ap = clevr_average_precision(pred, target)
    assert all(v == pytest.approx(0.5 + 1 / 3) for v in ap.values())


def test_distance_exactly_at_threshold_is_a_miss() -> None:
    target = sets([obj((0.0, 0.0, 0.0))])
    pred = sets([obj((0.25, 0.0, 0.0))])  # 0.25 * 3 = 0.75 in original units, exactly
    above = math.nextafter(0.75, 1.0)
    ap = clevr_average_precision(pred, target, thresholds=(0.75, above, math.inf))
    assert ap == {0.75: 0.0, above: 1.0, math.inf: 1.0}


def test_threshold_miss_claims_nothing_and_nearest_object_decides() -> None:
    near, far = obj((0.0, 0.0, 0.0)), obj((0.5, 0.0, 0.0))  # same attributes, 1.5 apart
    target = sets([near, far])
    # The first prediction is nearest to `far` (0.6 away) but outside 0.5: a miss that claims
    # nothing, so the second prediction still gets `far`.
    pred = sets([with_confidence(obj((0.3, 0.0, 0.0)), 0.9), with_confidence(far, 0.8)])
    ap = clevr_average_precision(pred, target, thresholds=(1.0, 0.5))
    # threshold 1: TP (far), then duplicate of far -> FP; recall 1/2.
    assert ap[1.0] == pytest.approx(0.5)
    # threshold 0.5: FP, TP -> recall 1/2 at precision 1/2.
    assert ap[0.5] == pytest.approx(0.25)


def test_ranking_is_pooled_over_the_evaluation_set() -> None:
    junk = with_confidence(obj((0.9, 0.9, 0.9), (1, 3, 2, 1)), 0.9)
    target = sets([A], [B, C])
    pred = sets([with_confidence(A, 0.6), junk], [with_confidence(B, 0.8), with_confidence(C, 0.3)])
    # Pooled ranking: junk (FP), B, A, C (TP): precision 0, 1/2, 2/3, 3/4 at recall 0, 1/3, 2/3, 1;
    # the envelope is 3/4 everywhere, so AP = 3/4. Scoring images separately would not give this.
    ap = clevr_average_precision(pred, target)
    assert ap[math.inf] == pytest.approx(0.75)
    assert clevr_average_precision(pred[:1], target[:1])[math.inf] == pytest.approx(0.5)


def test_empty_slots_are_ranked_without_cut_off() -> None:
    target = sets([A, B])
    # A low-confidence "empty" slot that matches B still counts: there is no presence cut-off.
    pred = sets([with_confidence(A, 0.9), with_confidence(B, 0.05), obj(presence=0.0)])
    assert clevr_average_precision(pred, target)[math.inf] == pytest.approx(1.0)
    # A confident empty slot ranks first and costs precision.
    confident_empty = obj((0.9, 0.9, 0.9), presence=0.6)
    pred = sets([with_confidence(A, 0.4), with_confidence(B, 0.3), confident_empty])
    # FP, TP, TP: precision 0, 1/2, 2/3 at recall 0, 1/2, 1; the envelope is 2/3 throughout.
    assert clevr_average_precision(pred, target)[math.inf] == pytest.approx(2 / 3)


def test_absent_targets_are_never_matched_or_counted() -> None:
    ghost = with_confidence(C, 0.0)  # padding row carrying C's attributes
    target = sets([A, ghost])
    pred = sets([with_confidence(C, 0.9), with_confidence(A, 0.8)])
    assert clevr_average_precision(pred, target)[math.inf] == pytest.approx(0.5)


def test_matches_plain_loop_reference_on_random_sets() -> None:
    generator = torch.Generator().manual_seed(0)
    pred, target = random_sets(generator, b=12, n=10)
    ap = clevr_average_precision(pred, target)
    for t in CLEVR_AP_THRESHOLDS:
        assert ap[t] == pytest.approx(reference_ap(pred, target, t), abs=1e-12)
    assert 0.0 < ap[math.inf] < 1.0 and ap[0.0625] < ap[math.inf]


def test_accumulator_over_batches_equals_one_shot() -> None:
    generator = torch.Generator().manual_seed(1)
    pred, target = random_sets(generator, b=20, n=10)
    accumulator = ClevrAPAccumulator()
    for start, stop in [(0, 3), (3, 4), (4, 15), (15, 20)]:
        accumulator.update(pred[start:stop].float(), target[start:stop])
    assert accumulator.compute() == clevr_average_precision(pred.float(), target)
    accumulator.reset()
    with pytest.raises(ValueError, match="update"):
        accumulator.compute()


def test_more_slots_than_targets_and_no_targets() -> None:
    target = sets([A], [obj(presence=0.0)])
    pred = sets([with_confidence(A, 0.5), obj(presence=0.1), obj(presence=0.2)], [B, C, A])
    assert clevr_average_precision(pred, target[:, :1])[math.inf] == pytest.approx(1 / 4)
    assert math.isnan(clevr_average_precision(pred[1:], target[1:])[math.inf])


def test_average_precision_voc_interpolation() -> None:
    # Hits at ranks 1, 3, 4 of 5 with 4 positives: envelope 1 on (0, 1/4], 3/4 on (1/4, 3/4].
    assert average_precision(np.array([1, 0, 1, 1, 0], bool), 4) == pytest.approx(0.25 + 0.5 * 0.75)


def test_invalid_arguments_raise_with_a_message() -> None:
    target = sets([A])
    with pytest.raises(ValueError, match="pred must have shape"):
        clevr_average_precision(torch.zeros(1, 2, 18), target)
    with pytest.raises(ValueError, match="target must have shape"):
        clevr_average_precision(target, target[0])
    with pytest.raises(ValueError, match="same number of images"):
        clevr_average_precision(target.expand(2, -1, -1), target)
    with pytest.raises(ValueError, match="thresholds"):
        ClevrAPAccumulator(thresholds=(1.0, 0.0))
    with pytest.raises(ValueError, match="cover"):
        ObjectLayout(coords=slice(0, 3), attributes=(slice(4, 6),), presence=6, coord_scale=1.0)


def test_custom_layout_is_decoded() -> None:
    # 2d coordinates in original units, one attribute group of 3 classes, presence last.
    layout = ObjectLayout(coords=slice(0, 2), attributes=(slice(2, 5),), presence=5, coord_scale=1.0)
    target = torch.tensor([[[0.0, 0.0, 1, 0, 0, 1], [2.0, 0.0, 0, 1, 0, 1]]], dtype=torch.float64)
    # The second prediction decodes to class 0, so it can only duplicate the first object.
    pred = torch.tensor([[[0.2, 0.0, 0.9, 0.1, 0, 0.9], [2.0, 0.4, 0.2, 0.1, 0, 0.8]]], dtype=torch.float64)
    ap = clevr_average_precision(pred, target, thresholds=(math.inf, 0.3), layout=layout)
    assert ap == {math.inf: pytest.approx(0.5), 0.3: pytest.approx(0.5)}


def test_attribute_accuracy_pairs_objects_by_position_and_counts_each_group() -> None:
    wrong_colour = B.clone()
    wrong_colour[CLEVR_LAYOUT.attributes[1]] = torch.eye(8, dtype=torch.float64)[5]
    wrong_shape_and_size = obj((0.6, -0.6, 0.1), (1, 7, 2, 1))  # C with shape 1 -> 2, size 0 -> 1
    far_but_right = obj((0.9, 0.9, 0.9), (0, 1, 2, 0))  # A, far from where A is
    target = sets([A, B, C], [A, B])
    # Image 0: listed out of order, paired by position: A right, B wrong colour, C wrong shape and size.
    # Image 1: one confident prediction (A, far away but nearest to A) and one unconfident slot.
    pred = sets(
        [wrong_shape_and_size, A, wrong_colour],
        [far_but_right, with_confidence(B, 0.4)],
    )
    acc = attribute_accuracy(pred, target, CLEVR_LAYOUT)
    assert acc["count"] == pytest.approx(0.5)  # image 1 has one confident object for two
    assert acc["group0"] == pytest.approx(1.0)  # material
    assert acc["group1"] == pytest.approx(3 / 4)  # colour: B wrong
    assert acc["group2"] == pytest.approx(3 / 4)  # shape: C wrong
    assert acc["group3"] == pytest.approx(3 / 4)  # size: C wrong
    assert acc["all"] == pytest.approx(2 / 4)
    assert attribute_accuracy(target, target, CLEVR_LAYOUT) == {
        "count": 1.0,
        "group0": 1.0,
        "group1": 1.0,
        "group2": 1.0,
        "group3": 1.0,
        "all": 1.0,
    }
    # Fewer slots than objects: padded, the missing objects count against the object count only.
    fewer = attribute_accuracy(pred[:, :2], target, CLEVR_LAYOUT)
    assert fewer["count"] == 0.0 and fewer["group1"] == 1.0  # the wrong-colour B is cut off
    assert fewer["group2"] == pytest.approx(2 / 3) and fewer["all"] == pytest.approx(2 / 3)  # C's shape
    # A diverged slot (NaN / inf coordinates) is far from everything, not a crash.
    diverged = pred.clone()
    diverged[0, 1, CLEVR_LAYOUT.coords] = torch.tensor([math.nan, math.inf, 0.0], dtype=torch.float64)
    assert attribute_accuracy(diverged, target, CLEVR_LAYOUT)["count"] == pytest.approx(0.5)
    nothing = attribute_accuracy(with_confidence(A, 0.0).expand(1, 2, -1), target[:1], CLEVR_LAYOUT)
    assert nothing["count"] == 0.0 and math.isnan(nothing["all"])


def test_attribute_accuracy_names_its_groups_and_rejects_bad_names() -> None:
    target = sets([A, B, C])
    names = ("material", "color", "shape", "size")
    assert attribute_accuracy(target, target, CLEVR_LAYOUT, names=names) == {
        "count": 1.0,
        **dict.fromkeys(names, 1.0),
        "all": 1.0,
    }
    with pytest.raises(ValueError, match="names"):
        attribute_accuracy(target, target, CLEVR_LAYOUT, names=names[:3])
    with pytest.raises(ValueError, match="names"):
        attribute_accuracy(target, target, CLEVR_LAYOUT, names=("material", "color", "shape", "all"))
    with pytest.raises(ValueError, match="distinct keys"):  # a repeated name would hide a group
        attribute_accuracy(target, target, CLEVR_LAYOUT, names=("material", "color", "color", "size"))


# --- the original code's per-image AP and the one ordering rule ------------------------------------


def at(o: torch.Tensor, xyz_original: tuple[float, float, float], confidence: float) -> torch.Tensor:
    """``o``'s attributes at coordinates given in original units, with a confidence."""
    x = with_confidence(o, confidence)
    x[CLEVR_LAYOUT.coords] = torch.tensor(xyz_original, dtype=torch.float64) / 3.0
    return x


def _hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    # Image 0: objects A at the origin and B at x = 1 (original units). p1 hits A; p2 is a duplicate of
    # A; p3 (tied with p2 at 0.8, after it by slot) is B's attributes 0.7 away; p4 sits exactly on B.
    # Image 1: one object C, hit exactly.
    a, b, c = at(A, (0, 0, 0), 1.0), at(B, (1, 0, 0), 1.0), at(C, (0, 2, 0), 1.0)
    image0 = [at(A, (0.1, 0, 0), 0.9), at(A, (0.2, 0, 0), 0.8), at(B, (1.7, 0, 0), 0.8), at(B, (1, 0, 0), 0.1)]
    image1 = [at(C, (0, 2, 0), 0.5)]
    return sets(image0, image1), sets([a, b], [c])


def test_image_ap_equals_a_hand_computation():
    pred, target = _hand_case()
    ap = image_average_precision(pred, target, thresholds=(math.inf, 0.5))
    # t = 0.5, image 0: p1 TP; p2 no candidate left (A taken): FP; p3 takes B although 0.7 away: FP;
    # p4: B already removed: FP. Recall 1/2 at precision 1: AP 0.5. Image 1: 1. Mean 0.75.
    # t = inf, image 0: TP, FP, TP, FP: AP = 1/2 * 1 + 1/2 * 2/3 = 5/6. Mean (5/6 + 1) / 2.
    assert ap[0.5] == pytest.approx(0.75)
    assert ap[math.inf] == pytest.approx((5 / 6 + 1) / 2)
    # The original protocol, first image of each batch of 2: image 0 alone.
    first = image_average_precision(pred, target, thresholds=(math.inf, 0.5), every=2)
    assert first[0.5] == pytest.approx(0.5) and first[math.inf] == pytest.approx(5 / 6)


def test_dataset_ap_of_the_same_case_pools_and_claims_only_hits():
    pred, target = _hand_case()
    # Pooled ranking p1 .9, p2 .8, p3 .8, c .5, p4 .1: TP, FP (duplicate), FP (miss, claims nothing),
    # TP, TP (B still free). Recall over 3 objects: 1/3 at precision 1, then 2/3 and 1 at 0.6.
    ap = clevr_average_precision(pred, target, thresholds=(0.5,))
    assert ap[0.5] == pytest.approx(1 / 3 + 0.6 / 3 + 0.6 / 3)


def test_tied_confidences_keep_slot_order_in_both_aps():
    pred, target = _hand_case()
    swapped = pred.clone()
    swapped[0, [1, 2]] = pred[0, [2, 1]]  # p3 now comes before p2 at the same confidence
    # image 0 at inf: TP, TP, FP, FP: AP 1, so the mean becomes 1.
    assert image_average_precision(swapped, target, thresholds=(math.inf,))[math.inf] == pytest.approx(1.0)
    assert image_average_precision(pred, target, thresholds=(math.inf,))[math.inf] == pytest.approx(11 / 12)


@pytest.mark.parametrize("metric", ["dataset", "image"])
def test_nan_confidence_ranks_last_like_minus_inf(metric):
    target = sets([A])
    scores = {}
    for duplicate in (float("nan"), -math.inf):
        pred = sets([with_confidence(A, 0.9), with_confidence(A, duplicate)])
        f = clevr_average_precision if metric == "dataset" else image_average_precision
        scores[duplicate] = f(pred, target, thresholds=(math.inf,))[math.inf]
    assert list(scores.values()) == [1.0, 1.0]


@pytest.mark.parametrize("metric", ["dataset", "image"])
def test_non_finite_coordinates_hit_nothing_even_at_threshold_inf(metric):
    bad = with_confidence(A, 0.9)
    bad[CLEVR_LAYOUT.coords.start] = float("nan")
    worse = with_confidence(A, 0.8)
    worse[CLEVR_LAYOUT.coords.start] = float("inf")
    f = clevr_average_precision if metric == "dataset" else image_average_precision
    ap = f(sets([bad, worse]), sets([A]), thresholds=(math.inf, 1.0))
    assert ap == {math.inf: 0.0, 1.0: 0.0}


def test_the_ap_functions_reject_what_they_cannot_score():
    target = sets([A])
    with pytest.raises(ValueError, match="torch.Tensor"):
        clevr_average_precision(target.numpy(), target)
    with pytest.raises(ValueError, match="floating"):
        image_average_precision(target.long(), target)
    with pytest.raises(ValueError, match="every"):
        image_average_precision(target, target, every=0)


def test_confidence_order_is_one_rule():
    order = confidence_order(np.array([0.5, float("nan"), -math.inf, 0.5, 2.0, float("nan")]))
    assert order.tolist() == [4, 0, 3, 2, 1, 5]


def test_a_layout_without_attributes_scores_positions_alone():
    layout = ObjectLayout(coords=slice(0, 3), attributes=(), presence=3, coord_scale=1.0)
    target = torch.tensor([[[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]])
    near = target + torch.tensor([0.01, 0.0, 0.0, 0.0])  # every object within 0.125 of its target
    aps = set_average_precision(near, target, layout, thresholds=(0.125,))
    assert aps[0.125] == pytest.approx(1.0)
    assert _image_average_precision(near, target, layout, (0.125,))[0.125] == pytest.approx(1.0)
    far = target + torch.tensor([0.5, 0.0, 0.0, 0.0])
    assert set_average_precision(far, target, layout, thresholds=(0.125,))[0.125] == pytest.approx(0.0)
    assert attribute_accuracy(near, target, layout) == {"count": 1.0, "all": 1.0}
