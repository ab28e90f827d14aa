"""The matrix products of ``FSEncoder`` and its fused gradient on CPU: ATen's or oneDNN's.

An inner step is mostly two ``(B * N, H) x (H, L)`` products and their transposes (the element MLP
and its input gradient), so their speed is the step's. On CPU, ATen runs a float32 product through
MKL, which chooses its kernels by processor vendor; oneDNN, shipped in the same torch build,
chooses them by instruction set, and on an AMD EPYC with AVX-512 runs these products at about
twice MKL's rate (``benchmarks/inner_step_parts.py`` times both at the inner loop's shapes;
docs/benchmarks.md).

``linear(x, weight, bias)`` is ``F.linear`` computed by oneDNN where the backend is ``"onednn"``
(the default where this torch build has oneDNN) and the tensors are float32 on the CPU, and by
``F.linear`` everywhere else (other devices and dtypes, ``set_matmul_backend("aten")``, or oneDNN
switched off by ``torch.backends.mkldnn``). Both compute the same function up to rounding, and
duplicates stay exact either way: encoders copy a duplicate's features from its first occurrence
after the product (``ranking.copy_first_occurrences_``).

The oneDNN product is the torch custom op ``idspn::onednn_linear``, whose backward is again oneDNN
products: ``torch.compile`` calls it as one opaque kernel. Eagerly it runs inside a
``torch.autograd.Function`` with a forward-mode rule and a vmap rule (custom ops have neither, and
Dynamo cannot trace a Function with a forward-mode rule), so it composes with autograd (to any
order), ``torch.func`` (grad, vjp, jvp, vmap, jacrev) and ``torch.compile`` (``fullgraph=True``).
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
    """Whether this torch build has oneDNN's dense linear product (x86 and ARM CPU builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


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
    """``x @ weight.T + bias`` by oneDNN, for CPU float32 tensors of any strides (no autograd)."""
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
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The three products' gradients, by oneDNN products again (differentiable: ``linear``)."""
    x, weight = ctx.saved_tensors
    grad_x = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = linear(grad, weight.t())  # (..., K)
    if ctx.needs_input_grad[1]:
        grad_weight = linear(_rows(grad).t(), _rows(x).t())  # (O, K)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_bias = _rows(grad).sum(0)  # (O,)
    return grad_x, grad_weight, grad_bias


_onednn_linear.register_autograd(_backward, setup_context=_save)


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` by ``idspn::onednn_linear``, differentiable in every argument."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return _onednn_linear(x, weight, bias)  # no graph: Function.forward runs without grad

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor | None], output: Tensor) -> None:
        _save(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1])

    backward = staticmethod(_backward)

    @staticmethod
    def jvp(ctx: Any, x_t: Tensor | None, weight_t: Tensor | None, bias_t: Tensor | None) -> Tensor:
        x, weight = ctx.saved_tensors
        out = torch.zeros((*x.shape[:-1], weight.shape[0]), dtype=x.dtype, device=x.device)
        if x_t is not None:
            out = out + F.linear(x_t, weight)
        if weight_t is not None:
            out = out + F.linear(x, weight_t)
        if bias_t is not None:
            out = out + bias_t
        return out

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[int | None, int | None, int | None], x: Tensor, weight: Tensor, bias: Tensor | None
    ) -> tuple[Tensor, int]:
        x_dim, weight_dim, bias_dim = in_dims
        if x_dim is not None and weight_dim is None and bias_dim is None:  # one weight for the batch: more rows
            return linear(x.movedim(x_dim, 0), weight, bias), 0
        size = info.batch_size
        x = x.movedim(x_dim, 0) if x_dim is not None else x.expand(size, *x.shape)  # (V, ..., K)
        weight = weight.movedim(weight_dim, 0) if weight_dim is not None else weight.expand(size, *weight.shape)
        out = torch.bmm(x.reshape(size, -1, x.shape[-1]), weight.transpose(1, 2))  # (V, M, O)
        if bias is not None:
            bias = bias.movedim(bias_dim, 0) if bias_dim is not None else bias.expand(size, *bias.shape)
            out = out + bias.unsqueeze(1)
        return out.reshape(*x.shape[:-1], weight.shape[1]), 0


def _uses_onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    return (
        _matmul_backend == "onednn"
        and bool(torch.backends.mkldnn.enabled)
        and x.device.type == weight.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and (bias is None or (bias.device.type == "cpu" and bias.dtype == torch.float32 and bias.dim() == 1))
        and x.dim() >= 2
        and weight.dim() == 2
        and x.numel() > 0
        and weight.numel() > 0
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``: ``(..., K), (O, K), (O,) -> (..., O)``, by the chosen backend.

    ``weight`` may be a transposed view (``w.t()`` gives ``x @ w``) with no copy by either backend.
    """
    if not _uses_onednn(x, weight, bias):
        return F.linear(x, weight, bias)
    if torch.compiler.is_compiling():
        return _onednn_linear(x, weight, bias)
    return _OneDNNLinear.apply(x, weight, bias)
