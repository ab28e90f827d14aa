"""Ranks and descending argsort along the set dimension, fast on CPU.

FSPool sorts every feature across the set at every inner step of the decoder, so sorting is the
largest cost of an iDSPN forward pass outside the matrix products. On CPU, NumPy's SIMD argsort of
contiguous rows is several times faster than ``torch.sort`` over many short rows (measured by
``benchmarks/sort_benchmark.py``), so CPU tensors go through it; other devices use ``torch.sort``.

Ties are broken in an arbitrary but valid order on the NumPy path and by position on the torch
path; either is a valid sort (Appendix A: any tie-breaking permutation S_X). The ranks are piecewise
constant in the input, so no gradient flows through them (Eq. 11): callers gather or scatter with
them to stay differentiable. NaN inputs give arbitrary ranks; the decoders check their outputs for
non-finite values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["argsort_descending", "rank_descending"]


def argsort_descending(x: Tensor, dim: int = 1) -> Tensor:
    """Indices that sort ``x`` in descending order along ``dim``.

    Args:
        x: floating tensor, e.g. ``(B, N, L)`` element features.
        dim: the dimension to sort along.

    Returns:
        ``torch.long`` tensor of the same shape as ``x``.
    """
    x = x.detach()
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return torch.sort(x, dim=dim, descending=True, stable=True).indices
    rows = x.movedim(dim, -1).neg().contiguous()  # ascending order of -x is descending order of x
    perm = torch.from_numpy(np.argsort(rows.numpy(), axis=-1))
    return perm.movedim(-1, dim)


def rank_descending(x: Tensor, dim: int = 1) -> Tensor:
    """Rank of every entry in descending order along ``dim`` (0 for the largest).

    Args:
        x: floating tensor, e.g. ``(B, N, L)``.
        dim: the dimension to rank along.

    Returns:
        ``torch.long`` tensor of the same shape as ``x``: a permutation of ``0..n-1`` along ``dim``.
    """
    perm = argsort_descending(x.movedim(dim, -1), -1).contiguous()  # (..., N): rows contiguous
    positions = torch.arange(perm.shape[-1], device=x.device).expand_as(perm)
    return torch.empty_like(perm).scatter_(-1, perm, positions).movedim(-1, dim)
