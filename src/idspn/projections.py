"""Projections onto feasible sets, for projected inner optimisation (Eq. 10)."""

from __future__ import annotations

import torch
from torch import Tensor

from .sorting import descending_values

__all__ = ["project_simplex"]


def _simplex_threshold(x: Tensor) -> Tensor:
    """``(..., 1)`` threshold theta with ``sum(max(x - theta, 0)) = 1`` (Duchi et al., 2008)."""
    desc = descending_values(x)
    cumsum = desc.cumsum(-1) - 1
    ranks = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
    # Support size, at least 1 in exact arithmetic; 0 only where NaN, inf or huge values (float32
    # cumsum rounding) break it, which must reach the decoder's finiteness check, not a bad index.
    size = (desc * ranks > cumsum).sum(-1, keepdim=True).clamp_(min=1)
    return cumsum.gather(-1, size - 1) / size


def project_simplex(x: Tensor) -> Tensor:
    """Euclidean projection of every vector along the last dim onto the probability simplex.

    The threshold ``theta`` is found by sorting without gradient. When ``x`` requires grad it is
    recomputed from the support ``x > theta`` with differentiable ops (the same value), so the
    result is differentiable almost everywhere (unrolled DSPN, Eq. 10).

    Args:
        x: ``(..., K)`` floating tensor.

    Returns:
        ``(..., K)`` tensor, non-negative, summing to 1 along the last dim. A row holding NaN gives
        NaN (in some or all of its entries), never an error: a diverged inner loop is reported by
        the decoder's finiteness check.
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
