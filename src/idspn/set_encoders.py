"""Permutation-invariant set encoders g: (B, N, D) -> (B, L).

Every pooling here is a weighted sum over the set, ``pooled[b, l] = sum_n w[b, n, l] * h[b, n, l]``,
where the weight of an element depends on its *rank* within its feature (FSPool), on nothing (sum,
mean) or on whether it is the largest (max). The weights are piecewise constant in ``h``, so the
vector-Jacobian product of pooling is simply ``w * grad``. This one form gives

* the ordinary forward pass,
* a fused ``value_and_vjp`` that the decoders call at every inner step (Eq. 6-7), written out in
  plain torch ops (no autograd graph, traceable by ``torch.compile``), and
* the equivariance properties of Section 2.3: rank-dependent weights (FSPool, max) give equal
  elements different gradients (exclusively multiset-equivariant, Appendix A); constant weights
  (sum, mean) cannot (set-equivariant).

Ranks are taken on features in which exact duplicates of an input row share their first
occurrence's features, so ties between equal elements are broken by position in every feature
whatever rounding the matrix products did: ``FSEncoder`` copies those rows in place on CPU
(``ranking.copy_first_occurrences_``), and elsewhere, like a pooling given a ``duplicates`` index,
ranks canonical keys (``ranking.canonical_keys``).

The file reads top-down: input checks -> the encoder interface -> poolings -> the encoder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module_hooks
from torch.nn.utils import parametrize

from .onednn_linear import linear
from .ranking import canonical_keys, copy_first_occurrences_, duplicate_index, fingerprint_table, lookup_by_rank

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
    "check_mask",
]

VJP = Callable[[Tensor], Tensor]


# --- input checks ------------------------------------------------------------------------------


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


def _every_set_present(mask: Tensor) -> bool | None:
    """Whether ``mask`` marks an element of every set, where reading that costs nothing: eagerly on
    CPU. None under ``torch.compile``, inside ``torch.func`` transforms (where a value cannot be
    read) and on other devices (where reading it would wait for the device)."""
    if torch.compiler.is_compiling() or mask.device.type != "cpu":
        return None
    try:
        return bool(mask.any(dim=1).all())
    except RuntimeError as err:  # torch.func.vmap: data-dependent control flow is not supported
        if "data-dependent" not in str(err):
            raise
        return None


def check_mask(mask: Tensor | None, x: Tensor) -> None:
    """Raise ``ValueError`` unless ``mask`` is None or a ``(B, N)`` bool tensor marking at least one
    element of every set present.

    The last condition is checked eagerly on CPU only (``_every_set_present``): compiled, under
    ``torch.func`` transforms and on a GPU, where the check would stop tracing or synchronise, a set
    with no element present pools to 0 instead."""
    if mask is None:
        return
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != x.shape[:2]:
        raise ValueError(
            f"mask must be a bool tensor of shape (B, N)={tuple(x.shape[:2])}, "
            f"got {getattr(mask, 'dtype', type(mask).__name__)} of shape {tuple(getattr(mask, 'shape', ()))}"
        )
    if _every_set_present(mask) is False:
        raise ValueError("mask must mark at least one element of every set as present")


def _check_features(h: Tensor, channels: int | None) -> None:
    check_set(h, "h")
    if channels is not None and h.shape[2] != channels:
        raise ValueError(f"h must have channels={channels} features, got shape {tuple(h.shape)}")


def _check_dtype(x: Tensor, weight: Tensor) -> None:
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(
            f"x must have the encoder's dtype {weight.dtype}, got {x.dtype} "
            f"(convert one of them, e.g. encoder.to({x.dtype}))"
        )


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


# --- the encoder interface ---------------------------------------------------------------------


class SetEncoder(nn.Module):
    """Base class of set encoders g: ``(B, N, D) -> (B, L)`` that a decoder can optimise through.

    Subclasses implement ``forward(x, mask=None)``. ``value_and_vjp`` returns ``g(x)`` and a function
    computing the vector-Jacobian product ``(dg/dx)^T v``; the default goes through ``torch.func.vjp``
    (so it composes with ``torch.func`` and ``torch.compile``), and subclasses may override it with
    a fused computation. The product must stay differentiable with respect to ``v`` and the
    parameters (Eq. 9 backpropagates through it) and, when ``x`` requires grad, with respect to
    ``x`` (unrolled DSPN, Hessian-vector products).
    """

    set_dim: int
    latent_dim: int | None

    def value_and_vjp(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, VJP]:
        out, pullback = torch.func.vjp(lambda inputs: self(inputs, mask), x)[:2]
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(
                f"a set encoder must map (B, N, D) to (B, L); {type(self).__name__} returned "
                f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__} "
                f"for an input of shape {tuple(x.shape)}"
            )
        return out, lambda v: pullback(v)[0]


class ModuleSetEncoder(SetEncoder):
    """Adapts any module mapping ``(B, N, D) -> (B, L)`` (without a mask argument) to ``SetEncoder``."""

    def __init__(self, module: nn.Module, set_dim: int, latent_dim: int | None = None) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ValueError(f"module must be an nn.Module, got {type(module).__name__}")
        self.module = module
        self.set_dim = _positive_int(set_dim, "set_dim")
        self.latent_dim = None if latent_dim is None else _positive_int(latent_dim, "latent_dim")

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            raise ValueError("mask is not supported by a ModuleSetEncoder; pass mask=None")
        return self.module(x)


# --- poolings ----------------------------------------------------------------------------------


def _zero_padding(x: Tensor, mask: Tensor | None) -> Tensor:
    """``x`` with padded elements (``mask`` False) set to 0, so that not even NaN or inf there reaches
    a sum (a zero weight alone would not do: ``nan * 0`` is NaN)."""
    return x if mask is None else torch.where(mask.unsqueeze(-1), x, 0.0)


def _padding_last(key: Tensor, mask: Tensor | None) -> Tensor:
    """Ranking keys in which every padded element (``mask`` False) comes after every present one,
    even a present ``-inf`` (raised to the dtype's lowest finite value; padding is ``-inf``)."""
    if mask is None:
        return key
    lowest = torch.finfo(key.dtype).min
    return torch.where(mask.unsqueeze(-1), key.clamp(min=lowest), float("-inf"))


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
        init: initialisation of the weights: ``"normal"``, N(0, 1) (FSPool's own), or
            ``"fan_out"``, N(0, 1/rows) (``kaiming_normal_(mode="fan_out")``, as the original iDSPN
            code initialised its per-position table: std ``1/sqrt(set_size)``).
    """

    INITS = ("normal", "fan_out")
    ranks_elements = True  # its weights depend on ranks, so equal elements must tie exactly

    def __init__(self, channels: int, n_pieces: int = 20, set_size: int | None = None, init: str = "normal") -> None:
        super().__init__()
        self.channels = _positive_int(channels, "channels")
        self.n_pieces = _positive_int(n_pieces, "n_pieces")
        self.set_size = None if set_size is None else _positive_int(set_size, "set_size")
        if init not in self.INITS:
            raise ValueError(f"init must be one of {self.INITS}, got {init!r}")
        self.init = init
        rows = self.n_pieces + 1 if self.set_size is None else self.set_size
        self.weight = nn.Parameter(torch.empty(rows, self.channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the weights as ``init`` says."""
        with torch.no_grad():
            std = 1.0 if self.init == "normal" else self.weight.shape[0] ** -0.5
            self.weight.normal_(0.0, std)

    def extra_repr(self) -> str:
        size = f"set_size={self.set_size}" if self.set_size is not None else f"n_pieces={self.n_pieces}"
        return f"channels={self.channels}, {size}, init={self.init!r}"

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
        # Ranks and sizes in at least float32: half precision rounds integers above 256 (bfloat16)
        # or 2048 (float16), which would move ranks between pieces and drop present elements.
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        ranks = torch.arange(set_size, device=self.weight.device, dtype=dtype)
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
        return (weights * (ranks < sizes).unsqueeze(-1)).to(self.weight.dtype)

    def element_weights(self, h: Tensor, mask: Tensor | None = None, duplicates: Tensor | None = None) -> Tensor:
        """``(B, N, L)`` weight of each element: the position weight of its rank.

        Args:
            h: ``(B, N, L)`` element features.
            mask: ``(B, N)`` bool, present elements; padded ones are ranked last.
            duplicates: ``(B, N)`` first occurrence of each element's input row
                (``ranking.duplicate_index``), so that equal inputs tie exactly; None: rank ``h`` as is.
        """
        _check_features(h, self.channels)
        check_mask(mask, h)
        key = _padding_last(canonical_keys(h, duplicates), mask)
        return lookup_by_rank(key, self.position_weights(h.shape[1], mask), dim=1)  # no grad through ranks (Eq. 11)

    def forward(self, h: Tensor, mask: Tensor | None = None, duplicates: Tensor | None = None) -> Tensor:
        """``(B, N, L) -> (B, L)``."""
        weights = self.element_weights(h, mask, duplicates)  # checks h and mask first
        return (_zero_padding(h, mask) * weights).sum(1)


class SumPool(nn.Module):
    """Sum over the set: set-equivariant gradients (the DeepSets ablation of Tables 6 and 7)."""

    ranks_elements = False  # every element weighs alike: duplicates need no care

    def element_weights(self, h: Tensor, mask: Tensor | None = None, duplicates: Tensor | None = None) -> Tensor:
        _check_features(h, None)
        check_mask(mask, h)
        if mask is None:
            return torch.ones((1, 1, 1), dtype=h.dtype, device=h.device)
        return mask.to(h.dtype).unsqueeze(-1)  # (B, N, 1)

    def forward(self, h: Tensor, mask: Tensor | None = None, duplicates: Tensor | None = None) -> Tensor:
        weights = self.element_weights(h, mask, duplicates)  # checks h and mask first
        return (_zero_padding(h, mask) * weights).sum(1)


class MeanPool(SumPool):
    """Mean over the present elements: set-equivariant gradients."""

    def element_weights(self, h: Tensor, mask: Tensor | None = None, duplicates: Tensor | None = None) -> Tensor:
        _check_features(h, None)
        check_mask(mask, h)
        if mask is None:
            return torch.full((1, 1, 1), 1.0 / h.shape[1], dtype=h.dtype, device=h.device)
        present = mask.to(h.dtype)
        return (present / present.sum(1, keepdim=True).clamp(min=1)).unsqueeze(-1)  # (B, N, 1); empty: 0


class MaxPool(SumPool):
    """Featurewise max: the gradient goes to one element only (ties by position)."""

    ranks_elements = True  # the first of equal maxima takes the gradient, by position

    def element_weights(self, h: Tensor, mask: Tensor | None = None, duplicates: Tensor | None = None) -> Tensor:
        _check_features(h, None)
        check_mask(mask, h)
        key = _padding_last(canonical_keys(h, duplicates), mask)
        top = key.argmax(dim=1, keepdim=True)  # (B, 1, L): the first of equal maxima
        return torch.zeros_like(h).scatter(1, top, 1.0)


POOLINGS: dict[str, type[SumPool]] = {"sum": SumPool, "mean": MeanPool, "max": MaxPool}
_POOL_TYPES = (FSPool, SumPool, MeanPool, MaxPool)


# --- the encoder -------------------------------------------------------------------------------


def _duplicates(x: Tensor, mask: Tensor | None, table: Tensor | None) -> Tensor:
    """``duplicate_index`` of the input rows, where a present and a padded row are never equal."""
    if mask is not None:
        x = torch.cat([x, mask.unsqueeze(-1).to(x.dtype)], dim=-1)  # (B, N, D + 1)
    return duplicate_index(x, table)


def _exact_duplicates(
    h: Tensor, x: Tensor, mask: Tensor | None, pool: nn.Module, own: bool, table: Tensor | None
) -> Tensor | None:
    """Make the features ``h`` of equal input rows equal, for ``pool`` to rank.

    On CPU, where ``h`` is the encoder's ``own`` (``lin2``'s output, which nothing has saved for a
    backward pass: no hook ran on it), in place (``ranking.copy_first_occurrences_``), leaving
    nothing for the pooling to do (None). Otherwise the ``duplicates`` index, with which the pooling
    ranks canonical keys (``ranking.canonical_keys``), with no host synchronisation. A pooling that
    ranks nothing (sum, mean: ``ranks_elements`` False) needs no duplicates, so none are looked for.
    ``table``: the encoder's fingerprint multipliers (``ranking.fingerprint_table``).
    """
    if not getattr(pool, "ranks_elements", True):
        return None
    duplicates = _duplicates(x, mask, table)
    if h.device.type != "cpu" or not own:
        return duplicates
    copy_first_occurrences_(h.detach(), duplicates)
    return None


def _relu_and_vjp_eager(pre: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """``relu(pre)`` and ReLU's vjp, as autograd computes them.

    The vjp reads ReLU's pattern from its output, which the next layer's backward keeps anyway, so
    it costs no memory of its own (an unrolled DSPN keeps it for every step).
    """
    act = pre.relu()
    pattern = act.detach()  # > 0 exactly where pre > 0; piecewise constant, no gradient
    return act, lambda grad: torch.ops.aten.threshold_backward(grad, pattern, 0.0)


def _relu_and_vjp(pre: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """The same under ``torch.compile``, through a 0/1 float mask: ``pre * active`` and ``* active``.

    A compiled training step saves ReLU's pattern for the backward pass, and inductor's CPU kernels
    vectorise arithmetic on a float mask (``pre * active``) where a bool one needs conversions.
    """
    active = pre.detach().sign().clamp(min=0)  # (B, N, H): ReLU's derivative, no gradient
    return pre * active, lambda grad: grad * active


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
        or parametrize.is_parametrized(module)
    )


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
        fspool_init: initialisation of FSPool's weights, ``"normal"`` or ``"fan_out"`` (``FSPool``).
    """

    def __init__(
        self,
        set_dim: int,
        hidden_dim: int,
        latent_dim: int,
        set_size: int | None = None,
        pooling: str = "fspool",
        n_pieces: int = 20,
        fspool_init: str = "normal",
    ) -> None:
        super().__init__()
        self.set_dim = _positive_int(set_dim, "set_dim")
        self.hidden_dim = _positive_int(hidden_dim, "hidden_dim")
        self.latent_dim = _positive_int(latent_dim, "latent_dim")
        if pooling == "fspool":
            self.pool: FSPool | SumPool = FSPool(latent_dim, n_pieces=n_pieces, set_size=set_size, init=fspool_init)
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
        self.fingerprint_table: Tensor
        # The multipliers of the input rows' fingerprints (``ranking.duplicate_index``): rows of up to
        # set_dim + 1 features (a mask column) of up to four 16-bit words (float64). A buffer, so that
        # it moves with the encoder and reaches a compiled graph on its device; not saved (a constant).
        table = fingerprint_table(4 * (set_dim + 1)).to(self.lin1.weight.device)  # e.g. under `with torch.device(...)`
        self.register_buffer("fingerprint_table", table, persistent=False)

    def _check_input(self, x: Tensor, mask: Tensor | None) -> None:
        check_set(x, "x", set_dim=self.set_dim)
        _check_dtype(x, self.lin1.weight)
        check_mask(mask, x)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(B, N, D) -> (B, L)``; padded elements (``mask`` False) do not change the result.

        Unmodified (``fused_is_exact()``), its products run by ``onednn_linear.linear`` as the fused
        gradient's do; otherwise through the ``lin1`` and ``lin2`` modules, hooks and all."""
        self._check_input(x, mask)
        x = _zero_padding(x, mask)  # (B, N, D)
        own = self.fused_is_exact()
        if own:
            pre = linear(x, self.lin1.weight, self.lin1.bias)  # (B, N, H)
            h = linear(F.relu(pre), self.lin2.weight, self.lin2.bias)  # (B, N, L)
        else:
            h = self.lin2(F.relu(self.lin1(x)))  # (B, N, L)
        return self.pool(h, mask, _exact_duplicates(h, x, mask, self.pool, own=own, table=self.fingerprint_table))

    def fused_is_exact(self) -> bool:
        """Whether the fused ``value_and_vjp`` computes the gradient of this module's ``forward``.

        It does for an ``FSEncoder`` as defined here. It does not if a subclass overrides ``forward``,
        if ``lin1``, ``lin2`` or ``pool`` were replaced by other modules or had their ``forward``
        replaced on the instance, or if hooks or parametrizations (e.g. weight or spectral norm) run
        inside it: then ``value_and_vjp`` differentiates ``forward`` itself through ``torch.func.vjp``.
        """
        if type(self).forward is not FSEncoder.forward:
            return False
        if type(self.lin1) is not nn.Linear or type(self.lin2) is not nn.Linear or type(self.pool) not in _POOL_TYPES:
            return False
        if (
            _module_hooks._global_forward_hooks
            or _module_hooks._global_forward_pre_hooks
            or _module_hooks._global_backward_hooks
            or _module_hooks._global_backward_pre_hooks
        ):
            return False
        parts = (self, self.lin1, self.lin2, self.pool)
        return not any(_has_hooks(m) or "forward" in vars(m) for m in parts)  # no hooks, no patched forward

    def value_and_vjp(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, VJP]:
        """``g(x)`` and ``v -> (dg/dx)^T v``, written out (no autograd graph needed).

        The ReLU pattern and the pooling weights are piecewise constant in ``x``, so the product is
        exact wherever g is differentiable, and differentiable in ``v``, the parameters and ``x``.
        Falls back to ``SetEncoder.value_and_vjp`` unless ``fused_is_exact()``. Its matrix products
        run by ``onednn_linear.linear`` (oneDNN's kernels on CPU unless ``set_matmul_backend("aten")``).
        """
        if not self.fused_is_exact():
            return super().value_and_vjp(x, mask)
        self._check_input(x, mask)
        x = _zero_padding(x, mask)  # (B, N, D)
        pre = linear(x, self.lin1.weight, self.lin1.bias)  # (B, N, H)
        relu_vjp = _relu_and_vjp if torch.compiler.is_compiling() else _relu_and_vjp_eager
        act, relu_back = relu_vjp(pre)  # (B, N, H)
        h = linear(act, self.lin2.weight, self.lin2.bias)  # (B, N, L)
        duplicates = _exact_duplicates(h, x, mask, self.pool, own=True, table=self.fingerprint_table)
        weights = self.pool.element_weights(h, mask, duplicates)  # (B|1, N|1, L|1)
        out = (_zero_padding(h, mask) * weights).sum(1)  # (B, L), as forward: padding never reaches it

        def vjp(v: Tensor) -> Tensor:
            grad_h = weights * v.unsqueeze(1)  # (B, N, L)
            grad_pre = relu_back(linear(grad_h, self.lin2.weight.t()))  # (B, N, H)
            return linear(grad_pre, self.lin1.weight.t())  # (B, N, D)

        return out, vjp
