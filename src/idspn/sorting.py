"""Fast descending argsort along the set dimension.

FSPool sorts every feature across the set at every inner step of the decoder, so sorting is the
single largest cost of an iDSPN forward pass on small sets. On CPU, ``torch.sort`` over many short
rows is several times slower than NumPy's vectorised sort of plain integers, so for ``float32`` CPU
tensors we sort a 64-bit key that packs an order-preserving integer image of each value (high 32
bits) with its position (low 32 bits). Sorting the keys alone then yields the permutation, exactly
and with ties broken by position (a stable sort). Everything else goes through ``torch.sort``.

The permutation is piecewise constant in the input, so no gradient flows through it (Appendix A,
Eq. 11): callers gather or scatter with it to stay differentiable. NaN inputs give an arbitrary
permutation on the packed path; the decoders check their outputs for non-finite values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["argsort_descending"]


def _packed_argsort_descending_last(x: Tensor) -> Tensor:
    """Stable descending argsort over the last dim of a contiguous float32 CPU tensor."""
    n = x.shape[-1]
    bits = x.neg().view(torch.int32)  # ascending order of -x is descending order of x
    # Flip the 31 value bits of negative floats: signed-integer order then equals float order.
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    key = (bits.to(torch.int64) << 32) | torch.arange(n, dtype=torch.int64)
    key.numpy().sort(axis=-1)  # in place on the shared buffer
    return key & 0xFFFFFFFF


def argsort_descending(x: Tensor, dim: int = 1) -> Tensor:
    """Indices that sort ``x`` in descending order along ``dim`` (ties by position).

    Args:
        x: any floating tensor, e.g. ``(B, N, L)`` element features.
        dim: the dimension to sort along.

    Returns:
        ``torch.long`` tensor of the same shape as ``x``.
    """
    x = x.detach()
    packable = (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.shape[dim] < 2**31
    )
    if not packable:
        return torch.sort(x, dim=dim, descending=True, stable=True).indices
    moved = x.movedim(dim, -1).contiguous()
    return _packed_argsort_descending_last(moved).movedim(-1, dim)
