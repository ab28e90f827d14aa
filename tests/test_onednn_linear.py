"""The oneDNN matrix-product backend: the same function as ``F.linear`` under every transform."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from idspn import FSEncoder
from idspn.onednn_linear import (
    MATMUL_BACKENDS,
    get_matmul_backend,
    linear,
    onednn_available,
    set_matmul_backend,
    use_matmul_backend,
)

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


class _OpNames(TorchDispatchMode):
    """Records the names of the ops that run below autograd."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def _runs_onednn(fn) -> bool:
    with _OpNames() as mode:
        fn()
    return any(name.startswith("idspn.onednn_linear") for name in mode.names)


def _operands(shape=(4, 6, 5), out=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(out, shape[-1], generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(out, generator=g, dtype=dtype, requires_grad=True)
    return x, w, b


def _loss(lin, x, w, b):
    return lin(x, w, b).tanh().square().sum()


def test_the_default_on_cpu_is_onednn_and_the_choice_is_checked():
    assert get_matmul_backend() == "onednn"
    with pytest.raises(ValueError, match="name must be one of"):
        set_matmul_backend("mkl")
    with use_matmul_backend("aten"):
        assert get_matmul_backend() == "aten"
    assert get_matmul_backend() == "onednn"
    assert MATMUL_BACKENDS == ("aten", "onednn")


@pytest.mark.parametrize("shape", [(7, 5), (4, 6, 5), (2, 3, 4, 5)])
def test_values_and_gradients_equal_f_linear(shape):
    x, w, b = _operands(shape)
    assert _runs_onednn(lambda: linear(x, w, b))
    torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b))
    ours = torch.autograd.grad(_loss(linear, x, w, b), (x, w, b))
    ref = torch.autograd.grad(_loss(F.linear, x, w, b), (x, w, b))
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, r)


def test_a_transposed_weight_gives_the_plain_product_and_gradients_of_every_order():
    x, w, _ = _operands((4, 6, 5), out=5)
    torch.testing.assert_close(linear(x, w.t()), x @ w)
    (gx,) = torch.autograd.grad(_loss(lambda x, w, b: linear(x, w.t()), x, w, None), (x,), create_graph=True)
    (ref,) = torch.autograd.grad(_loss(lambda x, w, b: x @ w, x, w, None), (x,), create_graph=True)
    torch.testing.assert_close(gx, ref)
    torch.testing.assert_close(
        torch.autograd.grad(gx.square().sum(), w)[0],
        torch.autograd.grad(ref.square().sum(), w)[0],
        rtol=1e-5,
        atol=1e-4,
    )


def test_the_output_may_be_changed_in_place_under_autograd():
    x, w, b = _operands()
    out = linear(x, w, b)
    assert not out._is_view()
    out.detach()[0, 0] = 0.0  # as FSEncoder copies duplicate rows into its features
    out.sum().backward()
    torch.testing.assert_close(w.grad, x.detach().flatten(0, 1).sum(0).expand_as(w))


def test_torch_func_transforms_equal_those_of_f_linear():
    x, w, b = _operands()
    x0 = x.detach()
    torch.testing.assert_close(
        torch.func.grad(lambda w: _loss(linear, x0, w, b))(w), torch.func.grad(lambda w: _loss(F.linear, x0, w, b))(w)
    )
    torch.testing.assert_close(torch.func.vmap(lambda x: linear(x, w, b))(x0), F.linear(x0, w, b))
    assert not _runs_onednn(lambda: torch.func.grad(lambda w: _loss(linear, x0, w, b))(w))  # F.linear's rules
    ws = torch.randn(4, 3, 5)  # a weight per batch element
    torch.testing.assert_close(
        torch.func.vmap(lambda x, w: linear(x, w, b))(x0, ws), torch.func.vmap(lambda x, w: F.linear(x, w, b))(x0, ws)
    )
    t = torch.randn_like(x0)
    torch.testing.assert_close(
        torch.func.jvp(lambda x: linear(x, w, b), (x0,), (t,))[1],
        torch.func.jvp(lambda x: F.linear(x, w, b), (x0,), (t,))[1],
    )
    torch.testing.assert_close(
        torch.func.jacrev(lambda w: linear(x0, w, b))(w.detach()),
        torch.func.jacrev(lambda w: F.linear(x0, w, b))(w.detach()),
    )


def test_compiled_torch_func_takes_f_linear_and_its_gradients():
    x, w, b = _operands()
    x0 = x.detach()
    compiled = torch.compile(torch.func.grad(lambda w: _loss(linear, x0, w, b)), fullgraph=True)
    torch.testing.assert_close(compiled(w.detach()), torch.func.grad(lambda w: _loss(F.linear, x0, w, b))(w.detach()))
    t = torch.randn_like(x0)
    jvp = torch.compile(lambda x, t: torch.func.jvp(lambda x: linear(x, w, b), (x,), (t,))[1], fullgraph=True)
    torch.testing.assert_close(jvp(x0, t), F.linear(t, w))


def test_nested_forward_mode_keeps_the_mixed_term():
    x, w = torch.randn(4, 5), torch.randn(2, 5)

    def inner(c):
        return torch.func.jvp(lambda a: linear(a, c), (x,), (torch.ones_like(x),))[1]

    mixed = torch.func.jvp(inner, (w,), (torch.ones_like(w),))[1]
    torch.testing.assert_close(mixed, torch.full((4, 2), 5.0))


def test_bias_shapes_and_strides_onednn_cannot_read_take_f_linear():
    x, w, _ = _operands()
    for bias in (torch.randn(6)[::2], torch.randn(1).expand(3), torch.randn(1)):
        assert not _runs_onednn(lambda bias=bias: linear(x, w, bias))
        torch.testing.assert_close(linear(x, w, bias), F.linear(x, w, bias))
    with pytest.raises(RuntimeError):  # F.linear's shape error, not oneDNN's
        linear(x, w[:, :4])


def test_autocast_casts_as_for_f_linear():
    x, w, b = _operands()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x, w, b).dtype == F.linear(x, w, b).dtype == torch.bfloat16


def test_a_frozen_weight_keeps_no_input_for_the_backward():
    x, w, b = _operands()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        linear(x, w.detach(), b.detach())
    assert tuple(x.shape) not in [tuple(s) for s in saved]
    assert _runs_onednn(lambda: linear(x, w.detach(), b.detach()))


def test_compiled_forward_and_backward_call_the_custom_op_and_equal_eager():
    x, w, b = _operands()
    graphs = []

    def recording(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm

    torch.compile(lambda x, w, b: _loss(linear, x, w, b), fullgraph=True, backend=recording)(x, w, b)
    assert "idspn.onednn_linear" in graphs[0]  # one opaque op in the graph
    compiled = torch.compile(lambda x, w, b: _loss(linear, x, w, b), fullgraph=True)
    ours = torch.autograd.grad(compiled(x, w, b), (x, w, b))
    ref = torch.autograd.grad(_loss(F.linear, x, w, b), (x, w, b))
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, r)


def test_other_dtypes_empty_inputs_and_the_aten_choice_take_f_linear():
    x, w, b = _operands(dtype=torch.float64)
    assert not _runs_onednn(lambda: linear(x, w, b))
    x, w, b = _operands()
    assert not _runs_onednn(lambda: linear(x[:0], w, b))
    with pytest.raises(RuntimeError):  # F.linear's own error for a weight of the wrong rank
        linear(x, w.unsqueeze(0), b)
    assert linear(x[:0], w, b).shape == (0, 6, 3)
    with use_matmul_backend("aten"):
        assert not _runs_onednn(lambda: linear(x, w, b))
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        assert not _runs_onednn(lambda: linear(x, w, b))
    finally:
        torch.backends.mkldnn.enabled = previous


def test_the_encoders_fused_gradient_is_the_same_by_either_backend():
    torch.manual_seed(0)
    encoder = FSEncoder(5, 16, 12, set_size=6)
    x = torch.randn(3, 6, 5)
    v = torch.randn(3, 12)
    out, vjp = encoder.value_and_vjp(x)
    assert _runs_onednn(lambda: vjp(v))
    with use_matmul_backend("aten"):
        ref_out, ref_vjp = encoder.value_and_vjp(x)
        assert not _runs_onednn(lambda: ref_vjp(v))
        ref_grad = ref_vjp(v)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(vjp(v), ref_grad)


def test_the_encoders_forward_takes_the_backend_unless_a_hook_needs_its_modules():
    torch.manual_seed(0)
    encoder = FSEncoder(5, 16, 12, set_size=6)
    x = torch.randn(3, 6, 5)
    out = encoder(x)
    assert _runs_onednn(lambda: encoder(x))
    with use_matmul_backend("aten"):
        torch.testing.assert_close(encoder(x), out)
    calls = []
    encoder.lin2.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    assert not _runs_onednn(lambda: encoder(x))
    assert calls == [(3, 6, 12)]
