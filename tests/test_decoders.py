import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from idspn import (
    IDSPN,
    Equivariance,
    FSEncoder,
    InnerLoopDivergence,
    ModuleSetEncoder,
    classify_equivariance,
    decoders,
    hungarian_loss,
    project_simplex,
)

B, N, D, L = 3, 5, 2, 6


def _decoder(backward="approx", pooling="fspool", **kwargs):
    torch.manual_seed(0)
    fixed_dim = kwargs.get("fixed_dim", 0)
    enc = FSEncoder(set_dim=fixed_dim + D, hidden_dim=16, latent_dim=L, pooling=pooling).double()
    kwargs.setdefault("iters", 7)
    return IDSPN(enc, set_size=N, set_dim=D, backward=backward, **kwargs).double()


def _reference_value(decoder, z, y, y0, fixed=None):
    """L(Y) written from Eq. 6 with plain autograd-visible ops (independent of the fused path)."""
    x = y if fixed is None else torch.cat([fixed, y], -1)
    out = decoder.encoder(x)
    value = (out - z).pow(2).sum(1) / (2 * z.shape[1])
    return value + decoder.reg / 2 * (y - y0).pow(2).flatten(1).sum(1)


def _reference_grad(decoder, z, y, y0, fixed=None):
    leaf = y if y.requires_grad else y.detach().requires_grad_()
    (g,) = torch.autograd.grad(_reference_value(decoder, z, leaf, y0, fixed).sum(), leaf, create_graph=True)
    return g


def _params_grads(module, *extra):
    tensors = [p for p in module.parameters()] + list(extra)
    return [torch.zeros_like(t) if t.grad is None else t.grad.clone() for t in tensors]


def _zero(module, *extra):
    for t in list(module.parameters()) + list(extra):
        t.grad = None


def test_approx_gradient_is_autograd_through_the_last_inner_step():
    dec = _decoder("approx", momentum=0.9, grad_clip=5.0, reg=0.1, init="learned")
    z = torch.randn(B, L, dtype=torch.float64, requires_grad=True)
    w = torch.randn(B, N, D, dtype=torch.float64)
    y = dec(z)
    (y * w).sum().backward()
    got = _params_grads(dec, z)

    _zero(dec, z)
    with torch.no_grad():
        y_prev = dec(z, iters=dec.iters - 1)  # the iterate before the last update
    y0 = dec.init_set.unsqueeze(0).expand(B, N, D)
    y_next = y_prev - dec.optimizer.lr * _reference_grad(dec, z, y_prev, y0)
    (y_next * w).sum().backward()
    expected = _params_grads(dec, z)
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
    assert got[-1].abs().sum() > 0 and dec.init_set.grad is not None


def test_approx_with_projection_and_fixed_dims_differentiates_the_projected_step():
    dec = _decoder("approx", projection="simplex", fixed_dim=3, momentum=0.5)
    z = torch.randn(B, L, dtype=torch.float64, requires_grad=True)
    fixed = torch.randn(B, N, 3, dtype=torch.float64)
    y0 = torch.randn(B, N, D, dtype=torch.float64)
    w = torch.randn(B, N, D, dtype=torch.float64)
    y = dec(z, init_set=y0, fixed=fixed)
    assert torch.allclose(y.sum(-1), torch.ones(B, N, dtype=torch.float64)) and (y >= 0).all()
    (y * w).sum().backward()
    got = _params_grads(dec, z)
    _zero(dec, z)
    with torch.no_grad():
        y_prev = dec(z, init_set=y0, fixed=fixed, iters=dec.iters - 1)
    y_next = project_simplex(y_prev - _reference_grad(dec, z, y_prev, y0, fixed))
    (y_next * w).sum().backward()
    for a, b in zip(got, _params_grads(dec, z), strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def _unrolled_reference(dec, z, y0, iters):
    o = dec.optimizer
    y, buf = y0, torch.zeros_like(y0)
    for _ in range(iters):
        g = _reference_grad(dec, z, y, y0)
        if o.grad_clip is not None:
            norm = g.flatten(1).norm(dim=1).view(-1, 1, 1)
            g = g * torch.clamp(o.grad_clip / norm, max=1.0)
        buf = o.momentum * buf + g
        y = y - o.lr * (g + o.momentum * buf)
    return y


@pytest.mark.parametrize("encoder_kind", ["fused", "generic"])
def test_unroll_gradient_equals_autograd_through_every_step(encoder_kind):
    dec = _decoder("unroll", momentum=0.9, grad_clip=0.5, reg=0.1, init="learned")
    if encoder_kind == "generic":  # same function through the autograd fallback
        fs = dec.encoder
        dec.encoder = ModuleSetEncoder(nn.Sequential(), set_dim=D, latent_dim=L)
        dec.encoder.forward = lambda x, mask=None: fs(x)
        dec.add_module("fs", fs)
    z = torch.randn(B, L, dtype=torch.float64, requires_grad=True)
    w = torch.randn(B, N, D, dtype=torch.float64)
    (dec(z) * w).sum().backward()
    got = _params_grads(dec, z)
    _zero(dec, z)
    y0 = dec.init_set.unsqueeze(0).expand(B, N, D)
    (_unrolled_reference(dec, z, y0, dec.iters) * w).sum().backward()
    for a, b in zip(got, _params_grads(dec, z), strict=True):
        assert torch.allclose(a, b, atol=1e-9)


def test_dspn_is_unrolled_idspn_and_forward_passes_agree():
    torch.manual_seed(1)
    enc = FSEncoder(D, 16, L).double()
    dspn = IDSPN(enc, N, D, iters=5, backward="unroll")
    assert dspn.backward_mode == "unroll"
    idspn = IDSPN(enc, N, D, iters=5)
    z = torch.randn(B, L, dtype=torch.float64)
    y0 = torch.randn(B, N, D, dtype=torch.float64)
    assert torch.allclose(dspn(z, init_set=y0), idspn(z, init_set=y0), atol=1e-12)


class _Linear(nn.Module):
    """g(Y) = W vec(Y) + c: makes the inner objective a strongly convex quadratic (with reg > 0)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(N * D, L)
        nn.init.normal_(self.lin.weight, std=0.3)

    def forward(self, x, mask=None):
        return self.lin(x.flatten(1))


def _quadratic_decoder(**kwargs):
    torch.manual_seed(2)
    enc = ModuleSetEncoder(_Linear(), set_dim=D, latent_dim=L).double()
    kwargs.setdefault("backward", "cg")
    return IDSPN(enc, N, D, iters=400, lr=0.5, reg=0.5, **kwargs).double()


def _closed_form(dec, z, y0):
    w, c = dec.encoder.module.lin.weight, dec.encoder.module.lin.bias
    h = w.T @ w / L + dec.reg * torch.eye(N * D, dtype=w.dtype)
    rhs = (z - c) @ w / L + dec.reg * y0.flatten(1)
    return torch.linalg.solve(h, rhs.T).T.view(-1, N, D)


def test_cg_gives_the_exact_implicit_gradient_on_a_strongly_convex_quadratic():
    dec = _quadratic_decoder(cg_gamma=None, cg_iters=50, cg_tol=1e-14)
    z = torch.randn(B, L, dtype=torch.float64, requires_grad=True)
    y0 = torch.randn(B, N, D, dtype=torch.float64, requires_grad=True)
    w = torch.randn(B, N, D, dtype=torch.float64)
    y = dec(z, init_set=y0)
    assert torch.allclose(y, _closed_form(dec, z, y0), atol=1e-10)
    (y * w).sum().backward()
    got = _params_grads(dec, z, y0)
    _zero(dec, z, y0)
    (_closed_form(dec, z, y0) * w).sum().backward()
    for a, b in zip(got, _params_grads(dec, z, y0), strict=True):
        assert torch.allclose(a, b, atol=1e-8)


def test_cg_with_large_gamma_recovers_approx_and_finite_gamma_solves_the_regularised_system():
    z = torch.randn(B, L, dtype=torch.float64, requires_grad=True)
    y0 = torch.randn(B, N, D, dtype=torch.float64)
    w = torch.randn(B, N, D, dtype=torch.float64)
    grads = {}
    for name, kwargs in {"cg": dict(cg_gamma=1e9), "approx": dict(backward="approx")}.items():
        dec = _quadratic_decoder(**kwargs)
        z.grad = None
        (dec(z, init_set=y0) * w).sum().backward()
        grads[name] = z.grad.clone()
    assert torch.allclose(grads["cg"], grads["approx"], atol=1e-7)

    gamma = 2.0
    dec = _quadratic_decoder(cg_gamma=gamma, cg_iters=50, cg_tol=1e-14)
    z.grad = None
    (dec(z, init_set=y0) * w).sum().backward()
    lin = dec.encoder.module.lin.weight
    a = dec.optimizer.lr * (lin.T @ lin / L + dec.reg * torch.eye(N * D, dtype=torch.float64))
    u = torch.linalg.solve(a / gamma + torch.eye(N * D, dtype=torch.float64), w.flatten(1).T).T  # (B, N*D)
    expected = dec.optimizer.lr * u @ lin.T / L  # d step / dz = lr * W / L
    assert torch.allclose(z.grad, expected.detach(), atol=1e-9)


def test_equal_initial_elements_are_separated_by_fspool_but_not_by_sum_pooling():
    z = torch.randn(2, L, dtype=torch.float64)
    y0 = torch.zeros(2, N, D, dtype=torch.float64)  # all elements equal
    spread = {}
    for pooling in ("fspool", "sum"):
        with torch.no_grad():
            y = _decoder(pooling=pooling, iters=10)(z, init_set=y0)
        spread[pooling] = torch.cdist(y, y).max().item()
    assert spread["fspool"] > 1e-3
    assert spread["sum"] < 1e-12


def test_approx_memory_does_not_keep_the_inner_loop():
    dec = _decoder("approx", iters=3)
    z = torch.randn(B, L, dtype=torch.float64)
    counts = []
    for iters in (3, 30):
        saved: list[torch.Tensor] = []

        def keep(t: torch.Tensor, saved: list[torch.Tensor] = saved) -> torch.Tensor:
            saved.append(t)
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            dec(z, iters=iters)
        counts.append(len(saved))
    assert counts[0] == counts[1]


def test_iters_can_change_at_evaluation_and_more_iters_lower_the_inner_loss():
    dec = _decoder("approx", momentum=0.9, iters=2)
    z = torch.randn(B, L, dtype=torch.float64)
    y0 = torch.randn(B, N, D, dtype=torch.float64) * 0.3
    with torch.no_grad():
        losses = [dec.problem(z, y0).value(dec(z, init_set=y0, iters=k)).mean().item() for k in (1, 10, 40)]
    assert losses[0] > losses[1] > losses[2]


@pytest.mark.parametrize("backward", ["approx", "unroll"])
def test_recorded_diagnostics_describe_the_returned_set_without_changing_it(backward):
    dec = _decoder(backward, momentum=0.5, reg=0.1, iters=3)
    z = torch.randn(B, L, dtype=torch.float64)
    y0 = torch.randn(B, N, D, dtype=torch.float64) * 0.3
    plain = dec(z, init_set=y0)
    assert dec.last_diagnostics is None
    dec.record_diagnostics = True
    recorded = dec(z, init_set=y0)
    assert torch.equal(plain, recorded) and recorded.requires_grad  # forward's result is untouched
    d = dec.last_diagnostics
    assert d.iters == 3 and d.final_objective.shape == (B,)
    y = recorded.detach()
    torch.testing.assert_close(d.final_objective, _reference_value(dec, z, y, y0).detach())
    torch.testing.assert_close(d.initial_objective, _reference_value(dec, z, y0, y0).detach())
    grad_norm = torch.linalg.vector_norm(_reference_grad(dec, z, y, y0).detach(), dim=(1, 2))
    torch.testing.assert_close(d.final_grad_norm, grad_norm)
    torch.testing.assert_close(d.distance, torch.linalg.vector_norm(y - y0, dim=(1, 2)))
    with torch.no_grad():
        dec(z, init_set=y0, iters=40)
    longer = dec.last_diagnostics
    assert longer.iters == 40 and longer.final_objective.mean() < d.final_objective.mean()
    summary = longer.summary()
    assert set(summary) == {"initial_objective", "final_objective", "final_grad_norm", "distance"}
    assert all(summary[name] == pytest.approx(getattr(longer, name).mean().item()) for name in summary)


def test_initial_sets():
    z = torch.randn(4, L, dtype=torch.float64)
    torch.manual_seed(3)
    dec = _decoder(init="random", init_std=0.5)
    y0 = dec.initial_set(torch.randn(4000, L, dtype=torch.float64))
    assert y0.std().item() == pytest.approx(0.5, rel=0.05)
    assert _decoder(init="zeros").initial_set(z).abs().sum() == 0
    learned = _decoder(init="learned")
    assert torch.equal(learned.initial_set(z)[1], learned.init_set)


def test_bad_arguments_raise():
    enc = FSEncoder(D, 8, L)
    for kwargs, name in [
        (dict(iters=0), "iters"),
        (dict(lr=0.0), "lr"),
        (dict(lr=-1.0), "lr"),
        (dict(momentum=1.0), "momentum"),
        (dict(grad_clip=0), "grad_clip"),
        (dict(init="ones"), "init"),
        (dict(backward="exact"), "backward"),
        (dict(projection="ball"), "projection"),
        (dict(projection="simplex", backward="cg"), "cg"),
        (dict(reg=-1.0), "reg"),
        (dict(fixed_dim=2), "fixed_dim"),
    ]:
        with pytest.raises(ValueError, match=name):
            IDSPN(enc, N, D, **kwargs)
    with pytest.raises(ValueError, match="set_size"):
        IDSPN(enc, 0, D)
    with pytest.raises(ValueError, match="set_dim"):
        IDSPN(enc, N, D + 1)
    with pytest.raises(ValueError, match="FSPool set_size"):
        IDSPN(FSEncoder(D, 8, L, set_size=3), N, D)
    dec = IDSPN(enc, N, D)
    with pytest.raises(ValueError, match=r"z must be .*\(B, L\)"):
        dec(torch.randn(L))
    with pytest.raises(ValueError, match="latent_dim"):
        dec(torch.randn(2, L + 1))
    with pytest.raises(ValueError, match="NaN"):
        dec(torch.full((2, L), float("nan")))
    with pytest.raises(ValueError, match="batch size 0"):
        dec(torch.randn(0, L))
    with pytest.raises(ValueError, match="init_set"):
        dec(torch.randn(2, L), init_set=torch.randn(2, N + 1, D))
    with pytest.raises(ValueError, match="fixed"):
        dec(torch.randn(2, L), fixed=torch.randn(2, N, 1))
    with pytest.raises(ValueError, match="iters"):
        dec(torch.randn(2, L), iters=-3)


def test_divergence_raises_instead_of_returning_nan():
    enc = FSEncoder(D, 8, L)
    dec = IDSPN(enc, N, D, lr=1e30, iters=30)
    with pytest.raises(InnerLoopDivergence, match="diverged"):
        dec(torch.randn(2, L) * 1e10)


def test_readme_example_trains():
    torch.manual_seed(0)
    encoder = FSEncoder(set_dim=2, hidden_dim=32, latent_dim=16)
    decoder = IDSPN(encoder, set_size=4, set_dim=2, iters=10, momentum=0.9)
    set_encoder = FSEncoder(set_dim=2, hidden_dim=32, latent_dim=16)
    params = list(decoder.parameters()) + list(set_encoder.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    data = torch.randn(64, 4, 2)
    losses = []
    for _ in range(60):
        loss = hungarian_loss(decoder(set_encoder(data)), data, "huber")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


# --- exact duplicates are ties by construction -----------------------------------------------------


def _ulp_noise(monkeypatch):
    """Make every linear layer round equal rows differently by position, as some BLAS kernels do:
    one ulp up at a fixed scattered subset of the (position, feature) pairs. Both kinds of product
    the encoders run get it: ``F.linear`` and the oneDNN backend's (``idspn.onednn_linear``)."""
    import idspn.onednn_linear

    def noisy(product):
        def product_with_noise(x, weight, bias=None):
            out = product(x, weight, bias)
            if out.dim() != 3:
                return out
            positions = torch.arange(out.shape[1]).view(-1, 1)
            features = torch.arange(out.shape[2]).view(1, -1)
            pattern = (positions * 31 + features * 17) % 5 < 2  # (N, L)
            return torch.where(pattern, out.nextafter(torch.full_like(out, float("inf"))), out)

        return product_with_noise

    monkeypatch.setattr(torch.nn.functional, "linear", noisy(torch.nn.functional.linear))
    monkeypatch.setattr(idspn.onednn_linear, "_onednn_linear", noisy(idspn.onednn_linear._onednn_linear))


def _decoder_function(hooked: bool = False, dtype: torch.dtype = torch.float64, **kwargs):
    torch.manual_seed(0)
    enc = FSEncoder(set_dim=3, hidden_dim=16, latent_dim=8).to(dtype)
    if hooked:  # a hook that changes nothing: the encoder ranks canonical keys, as it does off the CPU
        enc.lin2.register_forward_hook(lambda module, args, out: None)
    dec = IDSPN(enc, set_size=6, set_dim=3, iters=5, momentum=0.9, **kwargs).to(dtype)
    z = torch.randn(1, 8, dtype=dtype)
    return lambda y0: dec(z, init_set=y0.unsqueeze(0))[0].detach()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32 (oneDNN products)"])
@pytest.mark.parametrize("hooked", [False, True], ids=["copied in place", "canonical keys"])
@pytest.mark.parametrize("compile", [False, True])
def test_equal_elements_tie_by_position_whatever_the_rounding(monkeypatch, compile, hooked, dtype):
    _ulp_noise(monkeypatch)
    f = _decoder_function(hooked, dtype, compile=compile)
    got = classify_equivariance(f, set_size=6, set_dim=3, trials=2, dtype=dtype)
    assert got is Equivariance.EXCLUSIVELY_MULTISET


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32 (oneDNN products)"])
def test_without_the_duplicate_rule_the_same_rounding_breaks_equivariance(monkeypatch, dtype):
    # The control: ranking the noisy features as they are lets the noise decide the ties.
    _ulp_noise(monkeypatch)
    import idspn.set_encoders

    monkeypatch.setattr(
        idspn.set_encoders, "duplicate_index", lambda x, table=None: torch.arange(x.shape[1]).expand(x.shape[:2])
    )
    f = _decoder_function(dtype=dtype)
    assert classify_equivariance(f, set_size=6, set_dim=3, trials=2, dtype=dtype) is Equivariance.NONE


# --- composing with torch.func and torch.compile ---------------------------------------------------


@pytest.mark.parametrize("backward", ["approx", "unroll"])
def test_torch_func_grad_through_the_decoder_equals_autograd(backward):
    dec = _decoder(backward, momentum=0.9, grad_clip=5.0, projection="simplex", iters=4)
    z = torch.randn(B, L, dtype=torch.float64)
    y0 = torch.randn(B, N, D, dtype=torch.float64)
    w = torch.randn(B, N, D, dtype=torch.float64)
    got = torch.func.grad(lambda zz: (dec(zz, init_set=y0) * w).sum())(z)
    leaf = z.clone().requires_grad_()
    (dec(leaf, init_set=y0) * w).sum().backward()
    assert torch.allclose(got, leaf.grad, atol=1e-12) and got.abs().sum() > 0


def test_torch_func_vmap_over_examples_equals_the_batched_call():
    dec = _decoder("approx", momentum=0.9, check_finite=False)  # no data-dependent check under vmap
    z = torch.randn(B, L, dtype=torch.float64)
    y0 = torch.randn(B, N, D, dtype=torch.float64)
    per_example = torch.func.vmap(lambda zz, yy: dec(zz[None], init_set=yy[None])[0])(z, y0)
    with torch.no_grad():
        assert torch.allclose(per_example, dec(z, init_set=y0), atol=1e-12)


def _numbering_decoder(**kwargs):
    torch.manual_seed(0)
    n, classes = 64, 4
    enc = FSEncoder(set_dim=classes + n, hidden_dim=16, latent_dim=16, set_size=n)
    return IDSPN(
        enc,
        set_size=n,
        set_dim=n,
        iters=3,
        momentum=0.9,
        grad_clip=40.0,
        projection="simplex",
        fixed_dim=classes,
        **kwargs,
    )


@pytest.mark.parametrize("how", ["compile=True", "torch.compile(decoder)"])
def test_compiled_numbering_decoder_equals_eager_forward_and_backward(how):
    eager = _numbering_decoder()
    compiled = _numbering_decoder(compile=True) if how == "compile=True" else torch.compile(_numbering_decoder())
    z = torch.randn(8, 16)
    fixed = torch.nn.functional.one_hot(torch.randint(0, 4, (8, 64)), 4).float()
    y0 = torch.randn(8, 64, 64) * 0.1
    w = torch.randn(8, 64, 64)
    outputs, grads = [], []
    for model in (eager, compiled):
        zz = z.clone().requires_grad_()
        y = model(zz, init_set=y0, fixed=fixed)
        (y * w).sum().backward()
        outputs.append(y.detach())
        grads.append([zz.grad] + [p.grad for p in model.parameters()])
    assert torch.allclose(outputs[0], outputs[1], atol=1e-4)
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_many_compiled_decoders_in_one_process_each_compile_their_own_step():
    """Decoders of other shapes and settings (the runs of a sweep in one worker, a test suite) each
    compile their own step: none exhausts torch.compile's recompile limit, which counts per function."""
    import torch._dynamo

    z = torch.randn(2, L, dtype=torch.float64)
    settings = [(3, 2, "fspool", 0.9), (5, 4, "sum", 0.0), (4, 3, "mean", 0.5)]
    with torch._dynamo.config.patch(recompile_limit=2):  # the default is 8; smaller is quicker to hit
        for seed, setting in enumerate(settings):  # one step shared by all decoders failed at the third
            _compiled_equals_eager(seed, *setting, z)


def _compiled_equals_eager(seed, n, d, pooling, momentum, z):
    torch.manual_seed(seed)
    enc = FSEncoder(set_dim=d, hidden_dim=8, latent_dim=L, set_size=n, pooling=pooling).double()
    dec = IDSPN(enc, set_size=n, set_dim=d, iters=2, momentum=momentum, compile=True).double()
    outputs = []
    for mode in ("default", None):
        dec.compile_mode = mode
        torch.manual_seed(seed)
        with torch.no_grad():
            outputs.append(dec(z))
    torch.testing.assert_close(*outputs)


def test_compile_arguments_tune_the_default_mode_on_cpu_without_grad_only():
    import torch._inductor

    cpu = decoders.compile_arguments("default", torch.device("cpu"))
    assert cpu == {"options": decoders.CPU_INDUCTOR_OPTIONS}
    assert set(cpu["options"]) <= set(torch._inductor.list_options())  # torch.compile rejects unknown ones
    assert decoders.compile_arguments("default", torch.device("cpu"), grad=True) == {"mode": "default"}
    assert decoders.compile_arguments("default", torch.device("cuda")) == {"mode": "default"}
    assert decoders.compile_arguments("reduce-overhead", torch.device("cpu")) == {"mode": "reduce-overhead"}
    with pytest.raises(ValueError, match="mode must be one of"):
        decoders.compile_arguments("fast", torch.device("cpu"))


def test_steps_compiled_as_cuda_graphs_return_copies_of_their_outputs():
    """A CUDA-graph replay overwrites its previous outputs, which the inner loop feeds back in:
    the decoder's CUDA-graph steps hand out copies (the replays themselves run in cuda_checks.py)."""
    decoder, outputs = _decoder(), (torch.ones(3), None)
    step = decoders._outputs_copied(lambda *args: outputs)
    y, buf = step(1, 2)
    assert buf is None and torch.equal(y, outputs[0]) and y.data_ptr() != outputs[0].data_ptr()
    copying = step.__code__

    def wrapped(mode, device):
        return decoders._compiled(decoder, decoders.inner_step, mode, device).__code__ is copying

    assert wrapped("reduce-overhead", torch.device("cuda")) and wrapped("max-autotune", torch.device("cuda"))
    assert not wrapped("reduce-overhead", torch.device("cpu")) and not wrapped("default", torch.device("cuda"))


def test_a_model_compiled_with_the_decoders_arguments_equals_eager():
    torch.manual_seed(0)
    enc = FSEncoder(set_dim=2 + 6, hidden_dim=8, latent_dim=L, set_size=6).double()
    dec = IDSPN(enc, set_size=6, set_dim=6, iters=2, momentum=0.9, projection="simplex", fixed_dim=2).double()
    compiled = torch.compile(dec, **decoders.compile_arguments("default", torch.device("cpu")))
    z = torch.randn(2, L, dtype=torch.float64)
    fixed = torch.randn(2, 6, 2, dtype=torch.float64)
    y0 = torch.randn(2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(compiled(z, init_set=y0, fixed=fixed), dec(z, init_set=y0, fixed=fixed))


class _SyncCounter(TorchDispatchMode):
    """Counts the ops that copy a tensor's value to the host (``.item()``, ``bool(tensor)``)."""

    SYNCS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in self.SYNCS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backward", ["approx", "unroll"])
def test_host_syncs_none_in_the_inner_loop_and_at_most_one_per_forward(backward):
    dec = _decoder(backward, momentum=0.9, grad_clip=5.0, projection="simplex", fixed_dim=2, iters=5)
    z = torch.randn(B, L, dtype=torch.float64)
    fixed = torch.randn(B, N, 2, dtype=torch.float64)
    y0 = dec.initial_set(z)
    with _SyncCounter() as inner, torch.no_grad():
        dec._run(dec.problem(z, y0, fixed), y0, torch.zeros_like(y0), 5)
    counts = {}
    for check in (True, False):
        dec.check_finite = check
        for grad in (True, False):
            with _SyncCounter() as forward, torch.set_grad_enabled(grad):
                dec(z, fixed=fixed)
            counts[check, grad] = forward.count
    assert inner.count == 0
    assert counts == {(True, True): 1, (True, False): 1, (False, True): 0, (False, False): 0}


def test_non_finite_inputs_are_named_and_a_divergence_is_told_apart():
    dec = _decoder("approx")
    z = torch.randn(B, L, dtype=torch.float64)
    bad = z.clone()
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match="z contains NaN or inf"):
        dec(bad)
    y0 = torch.randn(B, N, D, dtype=torch.float64)
    y0[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="init_set contains NaN or inf"):
        dec(z, init_set=y0)
    with torch.no_grad():
        dec.encoder.lin1.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="parameter encoder.lin1.weight contains NaN"):
        dec(z)
    dec.check_finite = False
    assert not torch.isfinite(dec(z)).all()  # passes through, no check


def test_inputs_of_another_dtype_get_one_clear_error():
    dec = _decoder("approx")  # float64
    with pytest.raises(ValueError, match="z must have the decoder's dtype torch.float64"):
        dec(torch.randn(B, L))
    with pytest.raises(ValueError, match="init_set must have z's dtype"):
        dec(torch.randn(B, L, dtype=torch.float64), init_set=torch.randn(B, N, D))
    with pytest.raises(ValueError, match="compile"):
        IDSPN(FSEncoder(D, 8, L), N, D, compile="fast")
    converted_encoder_only = IDSPN(FSEncoder(D, 8, L).double(), N, D, init="learned")  # the initial set stays float32
    with pytest.raises(ValueError, match=r"learned initial set is torch.float32 .*decoder\.to\(torch.float64\)"):
        converted_encoder_only(torch.randn(B, L, dtype=torch.float64))
    assert converted_encoder_only.double()(torch.randn(B, L, dtype=torch.float64)).dtype == torch.float64


def test_cg_solves_every_example_as_if_it_were_alone():
    """An example that has converged stops changing while the rest of its batch goes on."""
    gen = torch.Generator().manual_seed(3)

    def spd(eigenvalues):
        q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=gen, dtype=torch.float64))
        return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T

    n = N * D
    a = torch.stack([spd([1.0 + 0.1 * i for i in range(n)]), spd([10.0**-i for i in range(n)])])  # fast, slow
    rhs = torch.randn(2, N, D, generator=gen, dtype=torch.float64)

    def solve(a, rhs):
        return decoders._conjugate_gradient(lambda d: (a @ d.flatten(1).unsqueeze(-1)).view_as(d), rhs, 40, 1e-4)

    batched, alone = solve(a, rhs), solve(a[:1], rhs[:1])
    assert torch.equal(batched[0], alone[0])
    for k in range(2):
        residual = rhs[k].flatten() - a[k] @ batched[k].flatten()
        assert residual.norm() <= 1e-4 * rhs[k].norm()


@pytest.mark.skipif(not torch.backends.cuda.is_built(), reason="fake CUDA tensors need a CUDA build of torch")
@pytest.mark.parametrize(
    "config",
    [
        dict(momentum=0.9, grad_clip=5.0, projection="simplex", fixed_dim=2),
        dict(init="learned", reg=0.1),
        dict(init="zeros", pooling="max"),
        dict(pooling="sum"),
    ],
)
def test_on_a_gpu_the_forward_stays_on_the_device_and_never_reads_a_value(config):
    config = dict(config)
    """Fake CUDA tensors (no GPU needed) take every branch the core takes off the CPU; an op that
    mixed in a CPU tensor, or read a value to the host (a sync), would raise."""
    with FakeTensorMode(allow_non_fake_inputs=True), torch.device("cuda"):
        pooling = config.pop("pooling", "fspool")
        enc = FSEncoder(config.get("fixed_dim", 0) + D, 16, L, pooling=pooling)  # made on the device: no .to()
        dec = IDSPN(enc, N, D, iters=3, check_finite=False, **config)
        z = torch.randn(B, L)
        fixed = torch.randn(B, N, 2) if config.get("fixed_dim") else None
        y = dec(z, fixed=fixed)
        assert y.device.type == "cuda" and y.shape == (B, N, D)
        y0 = torch.randn(B, N, D)
        solution = decoders._conjugate_gradient(lambda d: 2 * d, y0, 5, 1e-6)  # the CG backward's solve
        assert solution.device.type == "cuda"
        dec.check_finite = True
        with pytest.raises(DataDependentOutputException):  # the one read a checked forward makes
            dec(z, fixed=fixed)


@pytest.mark.parametrize("backward", ["approx", "unroll", "cg"])
def test_forward_and_backward_run_on_the_meta_device(backward):
    """Meta tensors have no values: a backward mode that read one (a host sync) would raise."""
    with torch.device("meta"):
        dec = _decoder(backward, iters=3)
        z = torch.randn(B, L, dtype=torch.float64, requires_grad=True)
        y = dec(z)
        y.sum().backward()
    assert y.device.type == "meta" and z.grad.device.type == "meta"
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in dec.encoder.parameters())
