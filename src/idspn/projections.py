"""Projections onto feasible sets, for projected inner optimisation (Eq. 10)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .row_threads import row_spans, run_spans

__all__ = ["project_simplex"]


def _simplex_threshold(x: Tensor) -> Tensor:
    """``(..., 1)`` threshold theta with ``sum(max(x - theta, 0)) = 1`` (Duchi et al., 2008)."""
    k = x.shape[-1]
    if x.device.type == "cpu":  # NumPy's SIMD sort of short rows beats torch.sort several times
        rows = x.contiguous().numpy().reshape(-1, k)
        theta = np.empty((len(rows), 1), dtype=rows.dtype)
        ranks = np.arange(1, k + 1, dtype=rows.dtype)

        def work(span: slice) -> None:
            desc = np.sort(rows[span], axis=-1)[:, ::-1]
            cumsum = np.cumsum(desc, axis=-1) - 1
            size = (desc - cumsum / ranks > 0).sum(-1, keepdims=True)  # support size, at least 1
            theta[span] = np.take_along_axis(cumsum, size - 1, axis=-1) / size

        run_spans(work, row_spans(len(rows), rows.size))
        return torch.from_numpy(theta).view(*x.shape[:-1], 1)
    desc = torch.sort(x, dim=-1, descending=True).values
    cumsum = desc.cumsum(-1) - 1
    ranks = torch.arange(1, k + 1, device=x.device, dtype=x.dtype)
    size = (desc - cumsum / ranks > 0).sum(-1, keepdim=True)
    return cumsum.gather(-1, size - 1) / size


def project_simplex(x: Tensor) -> Tensor:
    """Euclidean projection of every vector along the last dim onto the probability simplex.

    The threshold ``theta`` is found by sorting without gradient. When ``x`` requires grad it is
    recomputed from the support ``x > theta`` with differentiable ops (the same value), so the
    result is differentiable almost everywhere (unrolled DSPN, Eq. 10).

    Args:
        x: ``(..., K)`` floating tensor.

    Returns:
        ``(..., K)`` tensor, non-negative, summing to 1 along the last dim.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError("x must be a floating tensor with a non-empty last dim")
    with torch.no_grad():
        theta = _simplex_threshold(x.detach())  # (..., 1)
    if not (x.requires_grad and torch.is_grad_enabled()):
        return (x - theta).clamp_(min=0)
    support = x.detach() > theta
    count = support.sum(-1, keepdim=True).clamp(min=1).to(x.dtype)
    theta = ((x * support).sum(-1, keepdim=True) - 1) / count  # same value, differentiable
    return (x - theta).clamp(min=0)
