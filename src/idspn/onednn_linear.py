"""The matrix products of ``FSEncoder`` and its fused gradient on CPU: ATen's or oneDNN's.

An inner step is mostly two ``(B * N, H) x (H, L)`` products and their transposes (the element MLP
and its input gradient), so their speed is the step's. On CPU, ATen runs a float32 product through
MKL, which chooses its kernels by processor vendor; oneDNN, shipped in the same torch build,
chooses them by instruction set, and on an AMD EPYC with AVX-512 runs the inner step's four
products 1.5-2.0x as fast as MKL (``benchmarks/inner_step_parts.py`` times both at the inner
loop's shapes; docs/benchmarks.md).

``linear(x, weight, bias)`` is ``F.linear`` computed by oneDNN where the backend is ``"onednn"``
(the default where this torch build has oneDNN) and the tensors are float32 on the CPU, and by
``F.linear`` everywhere else (other devices and dtypes, ``set_matmul_backend("aten")``, oneDNN
switched off by ``torch.backends.mkldnn``, ``torch.func`` transforms, autocast, shapes that only
``F.linear`` broadcasts or rejects). Both compute the same function up to rounding, and duplicates
stay exact either way: encoders copy a duplicate's features from its first occurrence after the
product (``ranking.copy_first_occurrences_``).

The oneDNN product is the torch custom op ``idspn::onednn_linear``, whose registered backward is
again ``linear``: it composes with autograd (to any order) and ``torch.compile`` (one opaque kernel
under ``fullgraph=True``). Under ``torch.func`` transforms (grad, vjp, jvp, vmap, jacrev) and
autocast, ``linear`` is ``F.linear``, with its own rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MATMUL_BACKENDS",
    "get_matmul_backend",
    "linear",
    "onednn_available",
    "set_matmul_backend",
    "use_matmul_backend",
]

MATMUL_BACKENDS = ("aten", "onednn")


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's dense linear product (and the check ``linear`` makes
    for ``torch.func`` transforms): else the backend is ``"aten"``."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch._C, "_are_functorch_transforms_active")
    )


_matmul_backend = "onednn" if onednn_available() else "aten"


def set_matmul_backend(name: str) -> str:
    """Choose what computes ``linear`` on CPU float32 tensors; returns the previous choice.

    ``"onednn"`` (the default where available): oneDNN's kernels; ``"aten"``: ``F.linear`` (MKL or
    OpenBLAS, as any torch model). One setting for the whole process (not per thread); a compiled
    graph is recompiled after a change.
    """
    global _matmul_backend
    if name not in MATMUL_BACKENDS:
        raise ValueError(f"name must be one of {MATMUL_BACKENDS}, got {name!r}")
    if name == "onednn" and not onednn_available():
        raise ValueError("name='onednn' needs a torch build with oneDNN (torch.backends.mkldnn.is_available())")
    previous, _matmul_backend = _matmul_backend, name
    return previous


def get_matmul_backend() -> str:
    """The backend ``set_matmul_backend`` chose last."""
    return _matmul_backend


@contextmanager
def use_matmul_backend(name: str) -> Iterator[None]:
    """``set_matmul_backend(name)`` for the body of a ``with`` block, then the previous choice again."""
    previous = set_matmul_backend(name)
    try:
        yield
    finally:
        set_matmul_backend(previous)


@torch.library.custom_op("idspn::onednn_linear", mutates_args=())
def _onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias`` by oneDNN, for CPU float32 tensors (``x``, ``weight`` of any strides)."""
    out = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    # Of a (..., K) input it returns a view of its (M, O) result; the result, not a view, is what
    # the encoder changes in place (the duplicates' rows) and what autograd may save.
    return out.detach()


@_onednn_linear.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])  # (M, K)


def _save(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor | None], output: Tensor) -> None:
    x, weight, _ = inputs
    # What each gradient needs, as ATen's products save: x for the weight's, the weight for x's.
    ctx.save_for_backward(x if weight.requires_grad else None, weight if x.requires_grad else None)


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients of x, the weight and the bias, by ``linear`` again (so to any order)."""
    x, weight = ctx.saved_tensors
    grad_x = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = linear(grad, weight.t())  # (..., K)
    if ctx.needs_input_grad[1]:
        grad_weight = linear(_rows(grad).t(), _rows(x).t())  # (O, K)
    if ctx.needs_input_grad[2]:  # False for a bias of None
        grad_bias = _rows(grad).sum(0)  # (O,)
    return grad_x, grad_weight, grad_bias


_onednn_linear.register_autograd(_backward, setup_context=_save)


def _uses_onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether oneDNN computes ``F.linear(x, weight, bias)``: every other case, and every error of a
    wrong shape, is ``F.linear``'s."""
    return (
        _matmul_backend == "onednn"
        and x.device.type == weight.device.type == "cpu"  # first: other devices skip the process checks
        and x.dtype == weight.dtype == torch.float32
        and bool(torch.backends.mkldnn.enabled)
        and not torch.is_autocast_enabled("cpu")  # autocast casts F.linear's operands; it would not cast ours
        and not torch._C._are_functorch_transforms_active()  # torch.func: F.linear's own rules
        and x.dim() >= 2
        and weight.dim() == 2
        and x.shape[-1] == weight.shape[1]
        and x.numel() > 0
        and weight.numel() > 0
        and (
            bias is None
            or (
                bias.device.type == "cpu"
                and bias.dtype == torch.float32
                and bias.shape == weight.shape[:1]
                and bias.is_contiguous()  # oneDNN reads the bias as contiguous
            )
        )
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``: ``(..., K), (O, K), (O,) -> (..., O)``, by the chosen backend.

    ``weight`` may be a transposed view (``w.t()`` gives ``x @ w``).
    """
    if not _uses_onednn(x, weight, bias):
        return F.linear(x, weight, bias)
    return _onednn_linear(x, weight, bias)
