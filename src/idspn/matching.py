"""Batched optimal assignment between predicted and target set elements (Hungarian matching)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["batched_assignment"]


@torch.no_grad()
def batched_assignment(cost: Tensor) -> Tensor:
    """Minimum-cost one-to-one assignment of every prediction to a target, per example.

    Solved exactly with SciPy's ``linear_sum_assignment`` (a Jonker-Volgenant variant). Entries of
    ``+inf`` forbid a pair (class-restricted matching); an example whose allowed pairs admit no
    complete assignment raises ``ValueError``.

    Args:
        cost: ``(B, N, M)`` pairwise costs with ``N <= M``; row i is prediction i, column j target j.

    Returns:
        ``(B, N)`` long tensor on ``cost``'s device: the target index assigned to each prediction.
    """
    if not isinstance(cost, Tensor) or cost.dim() != 3:
        raise ValueError(f"cost must be a tensor of shape (B, N, M), got {getattr(cost, 'shape', type(cost))}")
    batch, n, m = cost.shape
    if n > m:
        raise ValueError(f"cost must have N <= M (predictions <= targets), got N={n}, M={m}")
    if torch.isnan(cost).any() or torch.isneginf(cost).any():
        raise ValueError("cost contains NaN or -inf")
    matrices = cost.detach().to("cpu", torch.float64).numpy()
    out = np.empty((batch, n), dtype=np.int64)
    for b in range(batch):
        try:
            rows, cols = linear_sum_assignment(matrices[b])
        except ValueError as err:
            raise ValueError(f"cost of example {b} admits no assignment with finite cost ({err})") from None
        out[b, rows] = cols
    return torch.from_numpy(out).to(cost.device)
