import pytest
import torch
from torch import nn

from idspn import DSPN, IDSPN, FSEncoder, InnerLoopDivergence, ModuleSetEncoder, hungarian_loss, project_simplex

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
    for a, b in zip(got, expected):
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
    for a, b in zip(got, _params_grads(dec, z)):
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
    for a, b in zip(got, _params_grads(dec, z)):
        assert torch.allclose(a, b, atol=1e-9)


def test_dspn_is_unrolled_idspn_and_forward_passes_agree():
    torch.manual_seed(1)
    enc = FSEncoder(D, 16, L).double()
    dspn = DSPN(enc, N, D, iters=5)
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
    for a, b in zip(got, _params_grads(dec, z, y0)):
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
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
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


def _split_problem(encoder_kind="fspool", batch=128, fixed_dim=2, init="random"):
    torch.manual_seed(1)
    n, d, latent = 16, 4, 64
    enc = FSEncoder(set_dim=fixed_dim + d, hidden_dim=32, latent_dim=latent)
    if encoder_kind == "generic":
        enc = ModuleSetEncoder(nn.Sequential(enc.lin1, nn.ReLU(), enc.lin2, _SumOverSet()), set_dim=fixed_dim + d)
    decoder = IDSPN(enc, set_size=n, set_dim=d, iters=3, momentum=0.9, grad_clip=5.0, projection="simplex",
                    fixed_dim=fixed_dim, reg=0.1, init=init)
    z = torch.randn(batch, latent)  # B * N * L = 131,072 at batch 128: split over 2 or 3 threads
    y0 = decoder.initial_set(z)
    fixed = None
    if fixed_dim:
        fixed = torch.nn.functional.one_hot(torch.randint(0, fixed_dim, (batch, n)), fixed_dim).float()
    return decoder, decoder.problem(z, y0, fixed), y0


class _SumOverSet(nn.Module):
    def forward(self, h):
        _SumOverSet.threads.add(torch.get_num_threads())
        return h.sum(1)


def _with_threads(count, fn):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(count)
        return fn()
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def splits(monkeypatch):
    import idspn.decoders

    counts = []
    run = idspn.decoders.run_spans
    monkeypatch.setattr(idspn.decoders, "run_spans", lambda w, s: (counts.append(len(s)), run(w, s)))
    return counts


@pytest.mark.parametrize("threads, batch, fixed_dim, init", [(2, 128, 2, "random"), (3, 127, 0, "learned")])
def test_no_grad_inner_loop_split_over_threads_equals_the_whole_batch(splits, threads, batch, fixed_dim, init):
    # Each example's inner problem is independent: running parts of the batch side by side (one
    # torch thread each) gives the whole batch's result up to rounding.
    decoder, problem, y0 = _split_problem(batch=batch, fixed_dim=fixed_dim, init=init)
    with torch.no_grad():
        whole = _with_threads(1, lambda: decoder.optimizer.run(problem, y0, 3))  # one thread: not split
        split = _with_threads(threads, lambda: decoder.optimizer.run(problem, y0, 3))
        single = decoder.optimizer.run(problem.select(slice(5, 6)), y0[5:6], 3)
    for a, b in zip(whole, split):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(single[0], split[0][5:6], atol=1e-5)
    assert splits == [threads]  # only the run with several threads was split


def test_the_split_inner_loop_still_reports_divergence(splits):
    decoder, problem, y0 = _split_problem()
    decoder.optimizer = type(decoder.optimizer)(lr=1e30, momentum=0.9, grad_clip=None, projection=None)
    z = problem.z.clone()
    z[3] = 1e30
    with torch.no_grad(), pytest.raises(InnerLoopDivergence):
        _with_threads(2, lambda: decoder(z, init_set=y0, fixed=problem.fixed))
    assert splits == [2]


def test_no_split_under_autocast_or_hooks_or_for_generic_encoders(splits):
    # Autocast is per thread (the pool's threads would not see it); a hook may keep state; a
    # ModuleSetEncoder may hold state (e.g. batch norm).
    decoder, problem, y0 = _split_problem()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _with_threads(2, lambda: decoder.optimizer.run(problem, y0, 1))
        handle = decoder.encoder.lin1.register_forward_hook(lambda *args: None)
        _with_threads(2, lambda: decoder.optimizer.run(problem, y0, 1))
        handle.remove()
    assert splits == []
    decoder, problem, y0 = _split_problem("generic")
    _SumOverSet.threads = set()
    with torch.no_grad():
        _with_threads(2, lambda: decoder.optimizer.run(problem, y0, 2))
    assert _SumOverSet.threads == {2} and splits == []
