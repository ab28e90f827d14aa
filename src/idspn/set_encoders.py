"""Permutation-invariant set encoders g: (B, N, D) -> (B, L).

Every pooling here is a weighted sum over the set, ``pooled[b, l] = sum_n w[b, n, l] * h[b, n, l]``,
where the weight of an element depends on its *rank* within its feature (FSPool), on nothing (sum,
mean) or on whether it is the largest (max). The weights are piecewise constant in ``h``, so the
vector-Jacobian product of pooling is simply ``w * grad``. This one form gives

* the ordinary forward pass,
* a fused ``value_and_vjp`` that the decoders call at every inner step (Eq. 6-7) without building an
  autograd graph, and
* the equivariance properties of Section 2.3: rank-dependent weights (FSPool, max) give equal
  elements different gradients (exclusively multiset-equivariant, Appendix A); constant weights
  (sum, mean) cannot (set-equivariant).

The file reads top-down: pooling weights -> poolings -> the encoder.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module_hooks
from torch.nn.utils import parametrize

from .sorting import lookup_by_rank, set_dim_outermost

__all__ = [
    "SetEncoder",
    "ModuleSetEncoder",
    "FSPool",
    "SumPool",
    "MeanPool",
    "MaxPool",
    "FSEncoder",
    "POOLINGS",
    "check_set",
]

VJP = Callable[[Tensor], Tensor]


def check_set(x: Tensor, name: str, set_dim: int | None = None, set_size: int | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is a non-empty ``(B, N, D)`` floating tensor."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, N, D), got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, N, D), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one set of at least one element, got shape {tuple(x.shape)}")
    if set_dim is not None and x.shape[2] != set_dim:
        raise ValueError(f"{name} must have set_dim={set_dim} features, got shape {tuple(x.shape)}")
    if set_size is not None and x.shape[1] != set_size:
        raise ValueError(f"{name} must have set_size={set_size} elements, got shape {tuple(x.shape)}")


def _check_mask(mask: Tensor | None, x: Tensor) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
        raise ValueError(
            f"mask must be a bool tensor of shape (B, N)={tuple(x.shape[:2])}, "
            f"got {mask.dtype} of shape {tuple(mask.shape)}"
        )
    if not mask.any(dim=1).all():
        raise ValueError("mask must mark at least one element of every set as present")


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class SetEncoder(nn.Module):
    """Base class of set encoders g: ``(B, N, D) -> (B, L)`` that a decoder can optimise through.

    Subclasses implement ``forward(x, mask=None)``. ``value_and_vjp`` returns ``g(x)`` and a function
    computing the vector-Jacobian product ``(dg/dx)^T v``; the default goes through autograd, and
    subclasses override it with a fused computation. The product must stay differentiable with
    respect to ``v`` and the parameters (Eq. 9 backpropagates through it) and, when ``x`` requires
    grad, with respect to ``x`` (unrolled DSPN, Hessian-vector products).
    """

    set_dim: int
    latent_dim: int
    thread_safe = False  # whether value_and_vjp may run for parts of a batch in several threads at once

    def value_and_vjp(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, VJP]:
        with torch.enable_grad():
            leaf = x if x.requires_grad else x.detach().requires_grad_()
            out = self(leaf, mask)  # (B, L)

        def vjp(v: Tensor) -> Tensor:
            (grad,) = torch.autograd.grad(out, leaf, v, create_graph=torch.is_grad_enabled())
            return grad  # (B, N, D)

        return out, vjp


class ModuleSetEncoder(SetEncoder):
    """Adapts any module mapping ``(B, N, D) -> (B, L)`` (without a mask argument) to ``SetEncoder``."""

    def __init__(self, module: nn.Module, set_dim: int, latent_dim: int | None = None) -> None:
        super().__init__()
        self.module = module
        self.set_dim = _positive_int(set_dim, "set_dim")
        self.latent_dim = None if latent_dim is None else _positive_int(latent_dim, "latent_dim")

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            raise ValueError("mask is not supported by a ModuleSetEncoder; pass mask=None")
        return self.module(x)


# --- pooling weights -----------------------------------------------------------------------------


def _rank_weights(h: Tensor, mask: Tensor | None, position_weights: Tensor) -> Tensor:
    """Give each element the weight of its rank: ``out[b, n, l] = pw[b, rank[b, n, l], l]``.

    Args:
        h: ``(B, N, L)`` element features, in any memory layout; padded elements (``mask`` False)
            are ranked last.
        mask: ``(B, N)`` bool or None.
        position_weights: ``(B or 1, N, L)`` weight of the r-th largest element of each feature.

    Returns:
        ``(B, N, L)`` per-element weights, differentiable in ``position_weights``; in the memory
        layout of ``h`` when the set dim is outermost or innermost in it (as ``FSEncoder`` lays
        out its features for the decoder's inner loop).
    """
    key = h if mask is None else torch.where(mask.unsqueeze(-1), h, float("-inf"))
    return lookup_by_rank(key, position_weights, dim=1)  # no gradient through the ranks (Eq. 11)


class FSPool(nn.Module):
    """Featurewise sort pooling (Zhang et al., 2020).

    Each feature is sorted across the set in descending order and the sorted values are summed with
    weights that depend on the relative position ``r = rank / (n - 1)`` through a learned
    piecewise-linear function with ``n_pieces`` pieces, so one set of parameters serves every set
    size, and padded elements (``mask`` False) are ignored exactly. With ``set_size`` given, the
    weights are instead a free ``(set_size, L)`` table per absolute rank, the simplification used in
    the iDSPN experiments; sets must then have at most ``set_size`` elements.

    Args:
        channels: number of features L.
        n_pieces: pieces of the piecewise-linear weight function (ignored with ``set_size``).
        set_size: if given, use fixed per-position weights for sets of this size.
    """

    def __init__(self, channels: int, n_pieces: int = 20, set_size: int | None = None) -> None:
        super().__init__()
        self.channels = _positive_int(channels, "channels")
        self.n_pieces = _positive_int(n_pieces, "n_pieces")
        self.set_size = None if set_size is None else _positive_int(set_size, "set_size")
        rows = self.n_pieces + 1 if self.set_size is None else self.set_size
        self.weight = nn.Parameter(torch.randn(rows, self.channels))

    def position_weights(self, set_size: int, mask: Tensor | None = None) -> Tensor:
        """Weight of the r-th largest element of each feature.

        Returns:
            ``(1, N, L)`` without a mask, ``(B, N, L)`` with one; zero for ranks past a set's size.
        """
        if self.set_size is not None:
            if set_size > self.set_size:
                raise ValueError(f"FSPool(set_size={self.set_size}) got sets of {set_size} elements")
            table = self.weight[:set_size].unsqueeze(0)  # (1, N, L)
            if mask is None:
                return table
            ranks = torch.arange(set_size, device=mask.device)
            return table * (ranks < mask.sum(1, keepdim=True)).unsqueeze(-1)  # (B, N, L)
        ranks = torch.arange(set_size, device=self.weight.device, dtype=self.weight.dtype)
        if mask is None:
            sizes = torch.full((1, 1), float(set_size), device=ranks.device, dtype=ranks.dtype)
        else:
            sizes = mask.sum(1, keepdim=True).to(ranks.dtype)  # (B, 1)
        relative = (ranks / (sizes - 1).clamp(min=1)).clamp(max=1.0)  # (B|1, N) in [0, 1]
        scaled = relative * self.n_pieces
        index = scaled.floor().long().clamp(max=self.n_pieces - 1)
        frac = (scaled - index).unsqueeze(-1)  # (B|1, N, 1)
        left, right = self.weight[index], self.weight[index + 1]  # (B|1, N, L)
        weights = (1 - frac) * left + frac * right
        return weights * (ranks < sizes).unsqueeze(-1)

    def element_weights(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(B, N, L)`` weight of each element: the position weight of its rank."""
        return _rank_weights(h, mask, self.position_weights(h.shape[1], mask))

    def forward(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(B, N, L) -> (B, L)``."""
        return (h * self.element_weights(h, mask)).sum(1)


class SumPool(nn.Module):
    """Sum over the set: set-equivariant gradients (the DeepSets ablation of Tables 6 and 7)."""

    def element_weights(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return torch.ones((1, 1, 1), dtype=h.dtype, device=h.device)
        return mask.to(h.dtype).unsqueeze(-1)  # (B, N, 1)

    def forward(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        return (h * self.element_weights(h, mask)).sum(1)


class MeanPool(SumPool):
    """Mean over the present elements: set-equivariant gradients."""

    def element_weights(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return torch.full((1, 1, 1), 1.0 / h.shape[1], dtype=h.dtype, device=h.device)
        present = mask.to(h.dtype)
        return (present / present.sum(1, keepdim=True)).unsqueeze(-1)  # (B, N, 1)


class MaxPool(SumPool):
    """Featurewise max: the gradient goes to one element only (ties by position)."""

    def element_weights(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        key = h if mask is None else h.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        top = key.detach().argmax(dim=1, keepdim=True)  # (B, 1, L)
        return torch.zeros_like(h).scatter_(1, top, 1.0)


POOLINGS: dict[str, type[nn.Module]] = {"sum": SumPool, "mean": MeanPool, "max": MaxPool}


# --- the encoder ---------------------------------------------------------------------------------


class FSEncoder(SetEncoder):
    """Per-element MLP ``Linear(D -> H)-ReLU-Linear(H -> L)`` followed by pooling over the set.

    This is the set encoder g of every iDSPN experiment (Appendix F). ``pooling="fspool"`` makes an
    iDSPN built on it exclusively multiset-equivariant; ``"sum"``/``"mean"`` give the set-equivariant
    ablations of Tables 6 and 7.

    Args:
        set_dim: element dimension D.
        hidden_dim: hidden width H.
        latent_dim: output dimension L.
        set_size: with FSPool, use fixed per-position weights for sets of this size (as in the
            paper's experiments); None uses the piecewise-linear weights that handle any size.
        pooling: one of "fspool", "sum", "mean", "max".
        n_pieces: pieces of FSPool's piecewise-linear weight function.
    """

    @property
    def thread_safe(self) -> bool:
        """``value_and_vjp`` only reads the module, unless a subclass overrides it or hooks or
        parametrizations (e.g. spectral norm's power iteration) run inside it."""
        if type(self).value_and_vjp is not FSEncoder.value_and_vjp:
            return False
        if _module_hooks._global_forward_hooks or _module_hooks._global_forward_pre_hooks:
            return False
        return not any(m._forward_hooks or m._forward_pre_hooks or parametrize.is_parametrized(m)
                       for m in (self, self.lin1, self.lin2, self.pool))

    def __init__(
        self,
        set_dim: int,
        hidden_dim: int,
        latent_dim: int,
        set_size: int | None = None,
        pooling: str = "fspool",
        n_pieces: int = 20,
    ) -> None:
        super().__init__()
        self.set_dim = _positive_int(set_dim, "set_dim")
        self.hidden_dim = _positive_int(hidden_dim, "hidden_dim")
        self.latent_dim = _positive_int(latent_dim, "latent_dim")
        if pooling == "fspool":
            self.pool: nn.Module = FSPool(latent_dim, n_pieces=n_pieces, set_size=set_size)
        elif pooling in POOLINGS:
            _positive_int(n_pieces, "n_pieces")
            if set_size is not None:
                _positive_int(set_size, "set_size")
            self.pool = POOLINGS[pooling]()
        else:
            raise ValueError(f"pooling must be one of 'fspool', {', '.join(map(repr, POOLINGS))}; got {pooling!r}")
        self.pooling = pooling
        self.lin1 = nn.Linear(set_dim, hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(B, N, D) -> (B, L)``; padded elements (``mask`` False) do not change the result."""
        check_set(x, "x", set_dim=self.set_dim)
        _check_mask(mask, x)
        h = self.lin2(F.relu(self.lin1(x)))  # (B, N, L)
        return self.pool(h, mask)

    def value_and_vjp(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, VJP]:
        """Fused ``g(x)`` and ``v -> (dg/dx)^T v`` written out by hand (no autograd graph needed).

        The ReLU pattern and the pooling weights are piecewise constant in ``x``, so the product is
        exact wherever g is differentiable, and differentiable in ``v``, the parameters and ``x``.
        The element features are laid out in memory as FSPool's ranking likes them (no copies):
        ``(N, B, L)`` for short sets (pairwise rank counting), ``(L, B, N)`` for long ones (sorting).
        """
        batch, n, _ = x.shape
        set_major = set_dim_outermost(n)
        rows = x.transpose(0, 1) if set_major else x  # (N, B, D) or (B, N, D)
        act = F.relu(self.lin1(rows), inplace=True).reshape(batch * n, self.hidden_dim)  # (rows, H)
        if set_major:
            h = torch.addmm(self.lin2.bias, act, self.lin2.weight.t())  # (N*B, L)
            h = h.view(n, batch, self.latent_dim).transpose(0, 1)  # (B, N, L), a view
        else:
            h = torch.addmm(self.lin2.bias.unsqueeze(1), self.lin2.weight, act.t())  # (L, B*N)
            h = h.view(self.latent_dim, batch, n).permute(1, 2, 0)  # (B, N, L), a view
        weights = self.pool.element_weights(h, mask)  # (B|1, N, L|1)
        out = (h * weights).sum(1)  # (B, L)

        def vjp(v: Tensor) -> Tensor:
            grad_h = (weights * v.unsqueeze(1)).expand(batch, n, self.latent_dim)  # (B, N, L)
            if set_major:
                grad_act = grad_h.transpose(0, 1).reshape(n * batch, -1) @ self.lin2.weight  # (N*B, H)
            else:
                grad_act = grad_h.permute(2, 0, 1).reshape(-1, batch * n).t() @ self.lin2.weight  # (B*N, H)
            grad_pre = torch.ops.aten.threshold_backward(grad_act, act.detach(), 0.0)  # ReLU's pattern: no grad to act
            grad = grad_pre @ self.lin1.weight  # (rows, D)
            if set_major:
                return grad.view(n, batch, self.set_dim).transpose(0, 1)  # (B, N, D)
            return grad.view(batch, n, self.set_dim)

        return out, vjp
