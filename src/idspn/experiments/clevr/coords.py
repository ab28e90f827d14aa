"""Coordinate ranges of the targets: the only difference between Slot Attention, * and dagger in Table 3.

The data set stores the 3d coordinates divided by 3, in [-1, 1] (``scenes.LAYOUT``, as DSPN and
iDSPN use them). Slot Attention trains on coordinates scaled to [0, 1]; its variants * and dagger
(Table 3, Appendix F.3 last paragraph) use [-1, 1] and the original [-3, 3], which weights the
coordinates 2x and 6x more in the loss against the one-hot attributes. A model is trained in its
``coord_range`` (``to_range`` on the targets) and its predictions are mapped back with
``from_range`` before the metric, so every model is scored in the same units. Padding objects of
a target set (presence 0) stay all-zero in every range (``targets_to_range``), as in the targets
of DSPN and Slot Attention.
"""

from __future__ import annotations

from torch import Tensor

from idspn.experiments.clevr.scenes import LAYOUT

__all__ = ["COORD_RANGES", "coord_bounds", "to_range", "from_range", "targets_to_range"]

# name -> (low, high) of the coordinates; the stored coordinates span [-1, 1]
COORD_RANGES: dict[str, tuple[float, float]] = {"0..1": (0.0, 1.0), "-1..1": (-1.0, 1.0), "-3..3": (-3.0, 3.0)}


def coord_bounds(coord_range: str) -> tuple[float, float]:
    """``(low, high)`` of a named coordinate range; ValueError for an unknown name."""
    if coord_range not in COORD_RANGES:
        raise ValueError(f"coord_range must be one of {tuple(COORD_RANGES)}, got {coord_range!r}")
    return COORD_RANGES[coord_range]


def to_range(sets: Tensor, coord_range: str) -> Tensor:
    """Map the coordinates of stored sets ``(..., N, D)`` from [-1, 1] to ``coord_range``; the rest is kept."""
    low, high = coord_bounds(coord_range)
    out = sets.clone()
    out[..., LAYOUT.coords] = low + (sets[..., LAYOUT.coords] + 1) * ((high - low) / 2)
    return out


def from_range(sets: Tensor, coord_range: str) -> Tensor:
    """Inverse of ``to_range``: coordinates of ``(..., N, D)`` from ``coord_range`` back to [-1, 1]."""
    low, high = coord_bounds(coord_range)
    out = sets.clone()
    out[..., LAYOUT.coords] = (sets[..., LAYOUT.coords] - low) * (2 / (high - low)) - 1
    return out


def targets_to_range(targets: Tensor, coord_range: str) -> Tensor:
    """``to_range`` for target sets ``(..., N, D)``: padding objects (presence 0) stay all-zero."""
    out = to_range(targets, coord_range)
    return out * (targets[..., LAYOUT.presence : LAYOUT.presence + 1] != 0)
