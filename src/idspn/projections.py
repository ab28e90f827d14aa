"""Projections onto feasible sets, for projected inner optimisation (Eq. 10)."""

from __future__ import annotations

import torch
from torch import Tensor

from .ranking import sort_descending

__all__ = ["project_simplex", "PAIRWISE_MAX"]

PAIRWISE_MAX = 128  # under torch.compile: longest vector whose threshold is found by pairwise sums


def _threshold_by_sorting(x: Tensor) -> Tensor:
    """``(..., 1)`` simplex threshold ``theta`` (Duchi et al., 2008), by sorting.

    ``theta = (sum of the k largest entries - 1) / k`` for the support size ``k``, the largest with
    ``x_(k) > theta``. Differentiable in ``x``; the support is not. It is taken at least 1, so that
    rounding (a threshold lifted above the largest entry) never leaves it empty, and it holds every
    entry equal to its smallest one: in exact arithmetic ties are always inside together, and
    rounding must not split them, or equal entries would get different gradients.

    For a backward pass the gradient, ``1 / k`` at every entry of the support, comes from a boolean
    mask of the support (one byte per entry kept until the backward pass); otherwise the sorted
    values are a gather of ``x``, differentiable in any mode (``torch.func.jvp`` included), whose
    backward would keep the sort's int64 order. Both give the same value, the running sum's.
    """
    backward = torch.is_grad_enabled() and x.requires_grad
    desc = sort_descending(x.detach() if backward else x)  # (..., K)
    cumsum = desc.cumsum(-1)  # (..., K): sum of the k largest
    with torch.no_grad():
        ranks = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
        # Support size, at least 1 in exact arithmetic; 0 only where NaN, inf or huge values (cumsum
        # rounding) break it, which must reach the decoder's finiteness check, not a bad index.
        size = (desc * ranks > cumsum - 1).sum(-1, keepdim=True).clamp(min=1)  # (..., 1)
        smallest = desc.gather(-1, size - 1)  # (..., 1): the smallest entry of the support
        size = (desc >= smallest).sum(-1, keepdim=True).clamp(min=1)  # with all its ties
    theta = (cumsum.gather(-1, size - 1) - 1) / size  # (..., 1)
    if not backward:
        return theta
    kept = torch.where(x >= smallest, x, 0.0).sum(-1, keepdim=True)  # the support's sum, with its gradient
    return theta + (kept - kept.detach()) / size


def _support_by_pairs(x: Tensor) -> Tensor:
    """The same support without sorting: ``x_i`` is above the threshold iff ``sum_j max(x_j - x_i, 0) < 1``.

    ``f(t) = sum_j max(x_j - t, 0)`` decreases in t and the threshold solves ``f(theta) = 1``. Written
    for ``torch.compile``, which fuses the ``(..., K, K)`` sums into one pass.
    """
    excess = (x.unsqueeze(-2) - x.unsqueeze(-1)).clamp(min=0).sum(-1)  # (..., K): f(x_i), 0 for the largest
    return (excess < 1).to(x.dtype)


def project_simplex(x: Tensor) -> Tensor:
    """Euclidean projection of every vector along the last dim onto the probability simplex.

    The projection is ``max(x - theta, 0)`` with ``theta`` chosen so that every vector sums to 1.
    ``theta`` is the mean of the support ``x > theta`` less ``1 / |support|``: from the running sums
    of the sorted entries (one sort; for a backward pass a boolean mask of the support), or under
    ``torch.compile`` (up to ``PAIRWISE_MAX`` entries) from the support found by pairwise sums. Only
    the support is taken without gradient, so the result is differentiable almost everywhere
    (unrolled DSPN, Eq. 10).

    Args:
        x: ``(..., K)`` floating tensor.

    Half-precision inputs are projected in float32 (the result has their dtype). ``-inf`` entries
    project to 0. In float32 the sum is 1 up to the rounding of ``x - theta``, which swamps it only
    for entries beyond about ``1e7``, where the float32 spacing exceeds 1.

    Returns:
        ``(..., K)`` tensor, non-negative, summing to 1 along the last dim. A row holding NaN gives
        NaN (in some or all of its entries), never an error: a diverged inner loop is reported by
        the decoder's finiteness check.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError("x must be a floating tensor with a non-empty last dim")
    if x.element_size() < 4:  # half precision cannot hold x - theta near large entries: float32 inside
        return project_simplex(x.float()).to(x.dtype)
    compiling = torch.compiler.is_compiling()
    if compiling and x.shape[-1] <= PAIRWISE_MAX:
        # Masks are 0/1 floats, not bools: a compiled training step saves them for the backward
        # pass, and they are written for inductor's CPU kernels, which vectorise float arithmetic.
        with torch.no_grad():
            support = _support_by_pairs(x.detach())
        count = support.sum(-1, keepdim=True).clamp(min=1)
        kept = torch.where(support > 0, x, 0.0)  # not x * support: -inf * 0 would be NaN
        theta = (kept.sum(-1, keepdim=True) - 1) / count  # (..., 1)
    else:
        theta = _threshold_by_sorting(x)  # (..., 1)
    shifted = x - theta
    if not compiling:
        return shifted.clamp(min=0)
    positive = shifted.detach().sign().clamp(min=0)  # (..., K): 1 where kept, else 0
    # The same max(x - theta, 0): the clamp keeps -inf entries from -inf * 0, abs turns -0.0 into 0.0.
    return (shifted.clamp(min=-1) * positive).abs()
