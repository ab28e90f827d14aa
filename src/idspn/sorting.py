"""Stable descending argsort along the set dimension, fast on CPU.

FSPool sorts every feature across the set at every inner step of the decoder, so sorting is the
largest cost of an iDSPN forward pass outside the matrix products. On CPU, ``torch.sort`` over many
short rows is several times slower than NumPy's SIMD sort of plain integers, so for ``float32`` CPU
tensors we sort 64-bit keys that pack an order-preserving integer image of each value (high 32 bits)
with its position (low 32 bits): sorting the keys alone gives the permutation, exactly.

The sort must be *stable* (ties broken by position, the same rule in every feature). With an
arbitrary tie-breaking rule per feature, equal elements could be ranked first in one feature and
last in another depending on the input order, and the decoder would no longer be
multiset-equivariant (Definition 2); with one positional rule, permuting equal inputs permutes the
outputs (Appendix A.2). The permutation is piecewise constant in the input, so no gradient flows
through it (Eq. 11): callers gather or scatter with it to stay differentiable. NaN inputs give an
arbitrary order; the decoders check their outputs for non-finite values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["argsort_descending"]


def _packed_argsort_descending(rows: np.ndarray) -> np.ndarray:
    """Stable descending argsort over the last axis of a C-contiguous float32 array."""
    n = rows.shape[-1]
    bits = (-rows).view(np.int32)  # ascending order of -x is descending order of x
    key_high = (bits >> 31) & 0x7FFFFFFF
    key_high ^= bits  # negative floats: flip the value bits, so integer order = float order
    keys = np.empty(rows.shape, dtype=np.int64)
    halves = keys.view(np.int32).reshape(*rows.shape, 2)  # little-endian: [..., 0] is the low word
    halves[..., 1] = key_high
    halves[..., 0] = np.arange(n, dtype=np.int32)
    keys.sort(axis=-1)
    return halves[..., 0].astype(np.int64)


def argsort_descending(x: Tensor, dim: int = 1) -> Tensor:
    """Indices that stably sort ``x`` in descending order along ``dim`` (ties by position).

    Args:
        x: floating tensor, e.g. ``(B, N, L)`` element features.
        dim: the dimension to sort along.

    Returns:
        ``torch.long`` tensor of the same shape as ``x``.
    """
    x = x.detach()
    packable = np.little_endian and x.shape[dim] < 2**31
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or not packable:
        return torch.sort(x, dim=dim, descending=True, stable=True).indices
    rows = x.movedim(dim, -1).contiguous().numpy()
    if x.dtype == torch.float32:
        perm = _packed_argsort_descending(rows)
    else:
        perm = np.argsort(-rows, axis=-1, kind="stable")
    return torch.from_numpy(perm).movedim(-1, dim)
