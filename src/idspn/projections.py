"""Projections onto feasible sets, for projected inner optimisation (Eq. 10)."""

from __future__ import annotations

import torch
from torch import Tensor

from .sorting import argsort_descending

__all__ = ["project_simplex"]


def project_simplex(x: Tensor) -> Tensor:
    """Euclidean projection of every vector along the last dim onto the probability simplex.

    The threshold ``theta`` with ``sum(max(x - theta, 0)) = 1`` is found by sorting (Duchi et al.,
    2008) without gradient, then recomputed from the support ``x > theta`` with differentiable ops,
    so the result is differentiable almost everywhere (used by unrolled DSPN and by Eq. 10).

    Args:
        x: ``(..., K)`` floating tensor.

    Returns:
        ``(..., K)`` tensor, non-negative, summing to 1 along the last dim.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError("x must be a floating tensor with a non-empty last dim")
    with torch.no_grad():
        desc = x.gather(-1, argsort_descending(x, dim=-1))  # (..., K)
        cumsum = desc.cumsum(-1) - 1
        ranks = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
        support_size = (desc - cumsum / ranks > 0).sum(-1, keepdim=True)  # (..., 1), at least 1
        theta = cumsum.gather(-1, support_size - 1) / support_size
        support = x > theta
    count = support.sum(-1, keepdim=True).clamp(min=1).to(x.dtype)
    theta = ((x * support).sum(-1, keepdim=True) - 1) / count  # same value, differentiable
    return (x - theta).clamp(min=0)
