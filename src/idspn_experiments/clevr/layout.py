"""The CLEVR object format: one scene as a fixed-size set of object vectors, and its coordinate ranges.

Each scene becomes a set of ``MAX_OBJECTS`` vectors of ``SET_DIM`` entries, laid out as DSPN and
iDSPN do (``LAYOUT``): 3d coordinates divided by 3 (so in [-1, 1]), one-hots of material, colour,
shape and size, and a presence flag; absent objects are all zeros. The metrics of
:mod:`idspn.metrics` decode exactly this layout, and ``AP_THRESHOLDS`` are the distance thresholds
of the paper's Table 3 (in the original units).

Coordinate ranges are the only difference between Slot Attention, * and dagger in Table 3: Slot
Attention trains on coordinates scaled to [0, 1], its variants * and dagger (Appendix F.3, last
paragraph) on [-1, 1] and the original [-3, 3], which weights the coordinates 2x and 6x more in
the loss against the one-hot attributes. A model is trained in its ``coord_range``
(``targets_to_range``) and its predictions are mapped back with ``from_range`` before the metric,
so every model is scored in the same units. Padding objects (presence 0) stay all-zero in every
range, as in the targets of DSPN and Slot Attention.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from idspn.metrics import ObjectLayout

__all__ = [
    "AP_THRESHOLDS",
    "ATTRIBUTES",
    "ATTRIBUTE_NAMES",
    "COLORS",
    "COORD_RANGES",
    "LAYOUT",
    "MATERIALS",
    "MAX_OBJECTS",
    "SET_DIM",
    "SHAPES",
    "SIZES",
    "coord_bounds",
    "encode_objects",
    "encode_scene",
    "from_range",
    "targets_to_range",
    "to_range",
]

# Attribute vocabularies in DSPN's order; index i of a vocabulary is position i of its one-hot.
MATERIALS: tuple[str, ...] = ("rubber", "metal")
COLORS: tuple[str, ...] = ("cyan", "blue", "yellow", "purple", "red", "green", "gray", "brown")
SHAPES: tuple[str, ...] = ("sphere", "cube", "cylinder")
SIZES: tuple[str, ...] = ("large", "small")
# Scene field name and vocabulary of every attribute group, in the order of LAYOUT.attributes.
ATTRIBUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("material", MATERIALS),
    ("color", COLORS),
    ("shape", SHAPES),
    ("size", SIZES),
)
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(name for name, _ in ATTRIBUTES)  # ("material", "color", "shape", "size")
MAX_OBJECTS = 10  # CLEVR scenes hold 3 to 10 objects

# 3d coordinates / 3, material (2), colour (8), shape (3), size (2), presence.
LAYOUT = ObjectLayout(
    coords=slice(0, 3),
    attributes=(slice(3, 5), slice(5, 13), slice(13, 16), slice(16, 18)),
    presence=18,
    coord_scale=3.0,
)
SET_DIM = LAYOUT.dim  # 19

# Distance thresholds of the paper's Table 3, in the original CLEVR units.
AP_THRESHOLDS: tuple[float, ...] = (math.inf, 1.0, 0.5, 0.25, 0.125, 0.0625)


# --- scenes -> sets ----------------------------------------------------------------------------


def encode_objects(scene: Mapping[str, Any]) -> np.ndarray:
    """``encode_scene`` as a NumPy array ``# (MAX_OBJECTS, SET_DIM)`` float32."""
    objects = scene.get("objects") if isinstance(scene, Mapping) else None
    if not isinstance(objects, list):
        raise ValueError(f"scene must be a mapping with an 'objects' list; got {type(scene).__name__}")
    if len(objects) > MAX_OBJECTS:
        raise ValueError(f"scene has {len(objects)} objects; expected at most MAX_OBJECTS={MAX_OBJECTS}")
    target = np.zeros((MAX_OBJECTS, SET_DIM), dtype=np.float32)  # (N, D)
    for i, obj in enumerate(objects):
        if not isinstance(obj, Mapping):
            raise ValueError(f"object {i}: expected a mapping of fields; got {type(obj).__name__}")
        coords = obj.get("3d_coords")
        if (
            not isinstance(coords, Sequence)
            or len(coords) != 3
            or not all(isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in coords)
        ):
            raise ValueError(f"object {i}: field '3d_coords' must be 3 finite numbers; got {coords!r}")
        target[i, LAYOUT.coords] = np.asarray(coords, dtype=np.float64) / LAYOUT.coord_scale
        for (field, vocabulary), group in zip(ATTRIBUTES, LAYOUT.attributes, strict=True):
            if field not in obj:
                raise ValueError(f"object {i}: missing field {field!r}")
            value = obj[field]
            if value not in vocabulary:
                raise ValueError(f"object {i}: unknown {field} {value!r}; expected one of {list(vocabulary)}")
            target[i, group.start + vocabulary.index(value)] = 1.0
        target[i, LAYOUT.presence] = 1.0
    return target


def encode_scene(scene: Mapping[str, Any]) -> Tensor:
    """Encodes one CLEVR scene as a zero-padded set of object vectors.

    Args:
        scene: A scene of a CLEVR scenes file; only ``objects`` and, per object, ``3d_coords``,
            ``material``, ``color``, ``shape`` and ``size`` are read (other fields are ignored).

    Returns:
        The target set ``# (MAX_OBJECTS, SET_DIM)``, float32, objects in the scene's order.

    Raises:
        ValueError: More than ``MAX_OBJECTS`` objects, a missing field, malformed or non-finite
            coordinates or an attribute value outside its vocabulary; the message names the object
            index and field.
    """
    return torch.from_numpy(encode_objects(scene))


# --- coordinate ranges -------------------------------------------------------------------------

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
