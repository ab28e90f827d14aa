"""Coordinate ranges of Table 3's Slot Attention variants decode to the same metric units."""

import dataclasses

import pytest
import torch

from idspn.metrics import ObjectLayout, set_average_precision
from idspn_experiments.clevr.layout import AP_THRESHOLDS, COORD_RANGES, LAYOUT, from_range, targets_to_range, to_range


def clevr_average_precision(pred: torch.Tensor, target: torch.Tensor, layout: ObjectLayout = LAYOUT) -> dict:
    return set_average_precision(pred, target, layout, AP_THRESHOLDS)


def _sets(batch: int = 6) -> torch.Tensor:
    torch.manual_seed(0)
    sets = torch.zeros(batch, 10, 19)  # (B, N, D)
    sets[..., :3] = torch.rand(batch, 10, 3) * 2 - 1
    for group in LAYOUT.attributes:
        sets[..., group] = torch.nn.functional.one_hot(
            torch.randint(0, group.stop - group.start, (batch, 10)), group.stop - group.start
        ).float()
    sets[..., LAYOUT.presence] = (torch.rand(batch, 10) < 0.7).float()
    return sets


@pytest.mark.parametrize("coord_range", list(COORD_RANGES))
def test_targets_span_the_range_and_map_back(coord_range):
    low, high = COORD_RANGES[coord_range]
    corners = torch.zeros(2, 1, 19)
    corners[0, 0, :3], corners[1, 0, :3] = -1.0, 1.0
    mapped = to_range(corners, coord_range)
    assert mapped[0, 0, :3].eq(low).all() and mapped[1, 0, :3].eq(high).all()
    sets = _sets()
    torch.testing.assert_close(from_range(to_range(sets, coord_range), coord_range), sets)
    torch.testing.assert_close(to_range(sets, coord_range)[..., 3:], sets[..., 3:])
    padded = targets_to_range(sets, coord_range)
    absent = sets[..., LAYOUT.presence] == 0
    assert absent.any() and padded[absent].eq(0).all()
    torch.testing.assert_close(padded[~absent], to_range(sets, coord_range)[~absent])


@pytest.mark.parametrize("coord_range", list(COORD_RANGES))
def test_every_range_is_scored_in_the_original_units(coord_range):
    """A prediction made in any range, decoded, scores as the same prediction measured in [-3, 3]."""
    targets = _sets()
    pred = targets + 0.02 * torch.randn_like(targets)  # close in [-1, 1] units: 0.06 in CLEVR units
    pred[..., LAYOUT.presence] = torch.rand(targets.shape[:2])
    in_range = to_range(pred, coord_range)
    decoded = clevr_average_precision(from_range(in_range, coord_range), targets)
    low, high = COORD_RANGES[coord_range]
    layout = dataclasses.replace(LAYOUT, coord_scale=6.0 / (high - low))  # distances straight in that range
    direct = clevr_average_precision(in_range, to_range(targets, coord_range), layout=layout)
    reference = clevr_average_precision(pred, targets)
    for threshold in reference:
        assert decoded[threshold] == pytest.approx(reference[threshold])
        assert direct[threshold] == pytest.approx(reference[threshold])
    assert reference[0.0625] < reference[0.25] == reference[float("inf")]  # thresholds in CLEVR units


def test_unknown_range_is_rejected():
    with pytest.raises(ValueError, match="coord_range must be one of"):
        to_range(_sets(), "0..6")
