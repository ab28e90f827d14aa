"""Set- and multiset-equivariance (Definitions 1-2) and the paper's ``push_apart`` (Eq. 1).

``classify_equivariance`` tests a set-to-set function empirically. Set-equivariance (Definition 1)
asks ``f(P X) = P f(X)`` for every permutation P; on inputs with duplicate elements this forces
equal inputs to stay equal (Proposition 1). Multiset-equivariance (Definition 2) only asks that
``f(P1 X) = P2 f(X)`` for *some* P2 with ``P2 X = P1 X``: outputs may be permuted freely among
positions whose inputs are equal. The test draws inputs with and without duplicates, applies random
permutations and the swaps of equal elements, and checks both conditions.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["push_apart", "Equivariance", "classify_equivariance"]


def push_apart(x: Tensor) -> Tensor:
    """Eq. 1: ``[a, b] -> [a - 1, b + 1]`` if ``a <= b`` else ``[a + 1, b - 1]``.

    Exclusively multiset-equivariant: ``push_apart([0, 0]) = [-1, 1]`` separates equal elements,
    which no set-equivariant function can do (Proposition 1).

    Args:
        x: ``(..., 2)`` pairs ``[a, b]``.

    Returns:
        ``(..., 2)``.
    """
    if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[-1] != 2:
        raise ValueError(f"x must be a tensor of shape (..., 2), got {getattr(x, 'shape', type(x))}")
    a_first = (x[..., 0] <= x[..., 1]).to(x.dtype)
    sign = torch.stack([1 - 2 * a_first, 2 * a_first - 1], dim=-1)  # [-1, 1] if a <= b else [1, -1]
    return x + sign


class Equivariance(enum.Enum):
    """Which equivariance a set-to-set function showed (Table 1)."""

    SET = "set-equivariant"
    EXCLUSIVELY_MULTISET = "exclusively multiset-equivariant"
    NONE = "not multiset-equivariant"


def _equal_groups(x: np.ndarray) -> list[np.ndarray]:
    _, inverse = np.unique(x, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]


def _multiset_match(
    out_perm: np.ndarray, out: np.ndarray, perm: np.ndarray, groups: list[np.ndarray], atol: float
) -> bool:
    """True if ``out_perm = P2 out`` for some P2 that only reorders positions with equal inputs.

    Within each group of equal inputs, a matching of every output to one within ``atol`` must
    exist: the assignment minimises the number of pairs further apart than that (zero if it exists).
    """
    for group in groups:
        rows = np.flatnonzero(np.isin(perm, group))  # positions of f(P1 X) fed by this group
        far = np.abs(out_perm[rows][:, None, :] - out[group][None, :, :]).max(-1) > atol  # (|G|, |G|)
        r, c = linear_sum_assignment(far.astype(float))
        if far[r, c].any():
            return False
    return True


@torch.no_grad()
def classify_equivariance(
    f: Callable[[Tensor], Tensor],
    set_size: int = 6,
    set_dim: int = 3,
    trials: int = 4,
    atol: float = 1e-5,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> Equivariance:
    """Classify ``f: (N, D) -> (N, D')`` as set-, exclusively multiset- or not multiset-equivariant.

    ``f`` must be deterministic. Each trial draws a set with distinct elements and one whose
    elements come in equal pairs, and checks Definitions 1 and 2 under random permutations and
    under swaps of equal elements (which leave the input unchanged).

    Args:
        f: the function under test; it may use autograd internally (grad mode is enabled for it).
        set_size: N (at least 2).
        set_dim: D.
        trials: number of random input pairs.
        atol: largest absolute difference counted as equal.
        dtype: dtype of the inputs.
        seed: seed of the inputs and permutations.

    Returns:
        The ``Equivariance`` found.
    """
    if isinstance(set_size, bool) or not isinstance(set_size, int) or set_size < 2:
        raise ValueError(f"set_size must be an int >= 2, got {set_size!r}")
    if isinstance(set_dim, bool) or not isinstance(set_dim, int) or set_dim < 1:
        raise ValueError(f"set_dim must be a positive int, got {set_dim!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive int, got {trials!r}")
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not math.isfinite(atol) or atol < 0:
        raise ValueError(f"atol must be a finite number >= 0, got {atol!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype!r}")
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)

    def call(x: Tensor) -> np.ndarray:
        with torch.enable_grad():
            out = f(x.clone())
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != set_size:
            raise ValueError(f"f must map (N, D) to (N, D'), got output {getattr(out, 'shape', type(out))}")
        if not torch.isfinite(out).all():
            raise ValueError("f returned NaN or inf: the equivariance of a function is checked on finite outputs")
        return out.detach().cpu().double().numpy()

    set_eq, multiset_eq = True, True
    for _ in range(trials):
        distinct = torch.randn(set_size, set_dim, generator=gen, dtype=dtype)
        paired = distinct[torch.arange(set_size) // 2 * 2]  # rows 2k and 2k+1 equal
        for x in (distinct, paired):
            groups = _equal_groups(x.double().numpy())  # exact for every float dtype, bf16 included
            out = call(x)
            perms = [rng.permutation(set_size) for _ in range(3)]
            perms += [np.roll(np.arange(set_size), 1)]
            perms += [_swap(set_size, g[0], g[1]) for g in groups if len(g) > 1]
            for perm in perms:
                out_perm = call(x[torch.as_tensor(perm)])
                set_eq &= bool(np.abs(out_perm - out[perm]).max() <= atol)
                multiset_eq &= _multiset_match(out_perm, out, perm, groups, atol)
    if set_eq:
        return Equivariance.SET
    return Equivariance.EXCLUSIVELY_MULTISET if multiset_eq else Equivariance.NONE


def _swap(n: int, i: int, j: int) -> np.ndarray:
    perm = np.arange(n)
    perm[[i, j]] = perm[[j, i]]
    return perm
