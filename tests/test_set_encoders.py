import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from idspn import FSEncoder, FSPool, MaxPool, MeanPool, ModuleSetEncoder, SumPool

POOLINGS = ["fspool", "sum", "mean", "max"]


@pytest.mark.parametrize("set_size", [None, 8])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_encoder_is_permutation_invariant(pooling, set_size):
    enc = FSEncoder(set_dim=3, hidden_dim=16, latent_dim=5, set_size=set_size, pooling=pooling).double()
    x = torch.randn(4, 8, 3, dtype=torch.float64)
    perm = torch.randperm(8)
    assert torch.allclose(enc(x), enc(x[:, perm]), atol=1e-12)


@pytest.mark.parametrize("set_size", [None, 10])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_under_a_mask_does_not_change_the_result(pooling, set_size):
    enc = FSEncoder(set_dim=3, hidden_dim=16, latent_dim=5, set_size=set_size, pooling=pooling).double()
    sizes = [1, 4, 7]
    sets = [torch.randn(n, 3, dtype=torch.float64) for n in sizes]
    padded = torch.randn(3, 10, 3, dtype=torch.float64) * 100  # garbage padding
    mask = torch.zeros(3, 10, dtype=torch.bool)
    for b, s in enumerate(sets):
        padded[b, : len(s)] = s
        mask[b, : len(s)] = True
    batched = enc(padded, mask)
    for b, s in enumerate(sets):
        assert torch.allclose(batched[b], enc(s.unsqueeze(0))[0], atol=1e-10)


def test_fspool_weights_interpolate_between_pieces():
    pool = FSPool(channels=1, n_pieces=2).double()
    with torch.no_grad():
        pool.weight.copy_(torch.tensor([[1.0], [3.0], [5.0]]))
    # 5 elements: relative positions 0, .25, .5, .75, 1 -> weights 1, 2, 3, 4, 5
    w = pool.position_weights(5)
    assert torch.allclose(w.view(-1), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64))
    h = torch.tensor([[[1.0], [5.0], [3.0], [2.0], [4.0]]], dtype=torch.float64)
    assert pool(h).item() == pytest.approx(5 * 1 + 4 * 2 + 3 * 3 + 2 * 4 + 1 * 5)


@pytest.mark.parametrize("dtype, n", [(torch.bfloat16, 300), (torch.float16, 2100)])
def test_fspool_weights_in_half_precision_place_every_rank_as_float32_does(dtype, n):
    # Ranks past 256 (bfloat16) or 2048 (float16) are not integers of the weight's dtype.
    pool = FSPool(channels=3, n_pieces=4).to(dtype)
    reference = FSPool(channels=3, n_pieces=4)
    with torch.no_grad():
        reference.weight.copy_(pool.weight)  # the same weights, exactly, in float32
    expected = reference.position_weights(n).to(dtype)
    got = pool.position_weights(n)
    assert got.dtype == dtype and torch.equal(got, expected)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, n // 2 :] = False
    assert (pool.position_weights(n, mask)[:, :-1] != 0).sum(1).tolist() == [[n - 1] * 3, [n // 2] * 3]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("n", [7, 40])  # short sets: ranks counted, set-major layout; long: sorted
@pytest.mark.parametrize("pooling", POOLINGS)
def test_fused_vjp_matches_autograd(pooling, n, masked):
    enc = FSEncoder(set_dim=4, hidden_dim=12, latent_dim=6, pooling=pooling).double()
    x = torch.randn(3, n, 4, dtype=torch.float64)
    x[:, 2] = x[:, 0]  # duplicates: on CPU their features are copied in place, under autograd
    x.requires_grad_()
    mask = torch.rand(3, n) < 0.7 if masked else None
    if masked:
        mask[:, 0] = True
    v = torch.randn(3, 6, dtype=torch.float64)
    out, vjp = enc.value_and_vjp(x, mask)
    assert torch.allclose(out, enc(x, mask))
    fused = vjp(v)
    (reference,) = torch.autograd.grad(enc(x, mask), x, v, create_graph=True)
    assert torch.allclose(fused, reference, atol=1e-12)
    # the product is differentiable in the parameters and in x the same way as autograd's
    u = torch.randn_like(fused)
    params = [p for p in enc.parameters()] + [x]
    g_fused = torch.autograd.grad((fused * u).sum(), params, allow_unused=True)
    g_ref = torch.autograd.grad((reference * u).sum(), params, allow_unused=True)
    for p, a, b in zip(params, g_fused, g_ref, strict=True):
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("n", [7, 40])
def test_compiled_fused_vjp_matches_eager_and_its_gradients(n):
    # Under torch.compile the ReLU and its vjp go through a float mask instead of relu and
    # threshold_backward: the same values, and the same gradients in the parameters (Eq. 9).
    enc = FSEncoder(set_dim=4, hidden_dim=12, latent_dim=6, set_size=n).double()
    x = torch.randn(3, n, 4, dtype=torch.float64)
    x[:, 2] = x[:, 0]  # duplicates: copied in place into an intermediate of the compiled graph
    v = torch.randn(3, 6, dtype=torch.float64)

    def value_and_product(x, v):
        out, vjp = enc.value_and_vjp(x)
        return out, vjp(v)

    compiled = torch.compile(value_and_product, fullgraph=True)
    results = []
    for fn in (value_and_product, compiled):
        out, product = fn(x, v)
        grads = torch.autograd.grad((out.sum() + (product**2).sum()), list(enc.parameters()))
        results.append((out, product, grads))
    (out, product, grads), (c_out, c_product, c_grads) = results
    assert torch.allclose(c_out, out) and torch.allclose(c_product, product, atol=1e-12)
    for a, b in zip(c_grads, grads, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_generic_module_encoder_vjp_uses_autograd():
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)).double()
    enc = ModuleSetEncoder(module, set_dim=3, latent_dim=5)
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    v = torch.randn(2, 5, dtype=torch.float64)
    _, vjp = enc.value_and_vjp(x)
    expected = (v @ module[1].weight).view(2, 4, 3)
    assert torch.allclose(vjp(v), expected)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="pooling"):
        FSEncoder(3, 8, 4, pooling="median")
    for kwargs, name in [
        (dict(set_dim=0, hidden_dim=8, latent_dim=4), "set_dim"),
        (dict(set_dim=3, hidden_dim=-1, latent_dim=4), "hidden_dim"),
        (dict(set_dim=3, hidden_dim=8, latent_dim=2.5), "latent_dim"),
        (dict(set_dim=3, hidden_dim=8, latent_dim=4, n_pieces=0), "n_pieces"),
        (dict(set_dim=3, hidden_dim=8, latent_dim=4, set_size=0), "set_size"),
    ]:
        with pytest.raises(ValueError, match=name):
            FSEncoder(**kwargs)
    enc = FSEncoder(3, 8, 4, set_size=5)
    with pytest.raises(ValueError, match="set_dim=3"):
        enc(torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        enc(torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least one"):
        enc(torch.randn(2, 0, 3))
    with pytest.raises(ValueError, match="set_size=5"):
        enc(torch.randn(2, 6, 3))
    with pytest.raises(ValueError, match="mask"):
        enc(torch.randn(2, 5, 3), torch.ones(2, 5))
    with pytest.raises(ValueError, match="at least one element"):
        enc(torch.randn(2, 5, 3), torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="channels"):
        FSPool(0)
    assert isinstance(FSEncoder(3, 8, 4, pooling="sum").pool, SumPool)
    assert isinstance(FSEncoder(3, 8, 4, pooling="mean").pool, MeanPool)
    assert isinstance(FSEncoder(3, 8, 4, pooling="max").pool, MaxPool)


class _DoubledForward(FSEncoder):
    def forward(self, x, mask=None):
        return 2 * super().forward(x, mask)


@pytest.mark.parametrize("hooked", [False, True])
def test_backpropagation_through_duplicates_with_and_without_a_hook_that_saves_the_features(hooked):
    # The features of duplicate rows are made exact in place only where they are the encoder's
    # own: a hook's output may be saved for the backward pass, and must not change after.
    torch.manual_seed(0)
    enc = FSEncoder(set_dim=3, hidden_dim=8, latent_dim=4)
    if hooked:
        enc.lin2.register_forward_hook(lambda module, inputs, out: out.exp())  # exp saves its result
    x = torch.randn(2, 6, 3)
    x[:, 4] = x[:, 1]
    x.requires_grad_()
    enc(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("change", ["hook", "subclass", "parametrization", "replaced layer", "patched forward", "none"])
def test_fused_vjp_only_where_it_computes_the_gradient_of_forward(change):
    torch.manual_seed(0)
    enc = (_DoubledForward if change == "subclass" else FSEncoder)(set_dim=3, hidden_dim=8, latent_dim=4).double()
    if change == "hook":
        enc.lin2.register_forward_hook(lambda module, inputs, out: 2 * out)
    if change == "parametrization":
        torch.nn.utils.parametrize.register_parametrization(enc.lin1, "weight", _Doubled())
    if change == "replaced layer":
        enc.lin2 = _ScaledLinear(8, 4).double()
    if change == "patched forward":
        lin2 = enc.lin2
        lin2.forward = lambda t: 3 * torch.nn.Linear.forward(lin2, t)
    assert enc.fused_is_exact() == (change == "none")
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 4, dtype=torch.float64)
    out, vjp = enc.value_and_vjp(x)
    assert torch.allclose(out, enc(x))
    (expected,) = torch.autograd.grad(enc(x), x, v)
    assert torch.allclose(vjp(v), expected, atol=1e-12)


class _Doubled(torch.nn.Module):
    def forward(self, weight):
        return 2 * weight


class _ScaledLinear(torch.nn.Linear):
    def forward(self, x):
        return 3 * super().forward(x)


@pytest.mark.parametrize("n", [8, 64])
def test_torch_func_jvp_and_vmap_through_the_encoder(n):
    torch.manual_seed(0)
    enc = FSEncoder(set_dim=3, hidden_dim=16, latent_dim=5, set_size=n).double()
    x = torch.randn(4, n, 3, dtype=torch.float64)
    tangent = torch.randn_like(x)
    out, jvp = torch.func.jvp(enc, (x,), (tangent,))
    eps = 1e-6
    finite_difference = (enc(x + eps * tangent) - enc(x - eps * tangent)) / (2 * eps)
    assert torch.allclose(out, enc(x))
    assert torch.allclose(jvp, finite_difference, atol=1e-7)
    per_set = torch.func.vmap(lambda s: enc(s.unsqueeze(0)).squeeze(0))(x)
    assert torch.allclose(per_set, enc(x), atol=1e-12)
    jacobian = torch.func.jacrev(lambda s: enc(s.unsqueeze(0)).squeeze(0))(x[0])  # (L, N, D)
    assert torch.allclose(torch.einsum("lnd,nd->l", jacobian, tangent[0]), jvp[0], atol=1e-10)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_every_pooling_rejects_an_empty_set_under_a_mask(pooling):
    enc = FSEncoder(set_dim=3, hidden_dim=8, latent_dim=4, pooling=pooling)
    x = torch.randn(2, 5, 3)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match="at least one element"):
        enc(x, mask)
    with pytest.raises(ValueError, match="at least one element"):
        enc.value_and_vjp(x, mask)
    with pytest.raises(ValueError, match="at least one element"):
        enc.pool(torch.randn(2, 5, 4), mask)


def test_bad_inputs_get_clear_errors():
    enc = FSEncoder(set_dim=3, hidden_dim=8, latent_dim=4)
    with pytest.raises(ValueError, match="channels=4"):
        enc.pool(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="mask must be a bool"):
        enc(torch.randn(2, 5, 3), torch.ones(2, 5))
    with pytest.raises(ValueError, match="dtype torch.float32"):
        enc(torch.randn(2, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="set_dim=3"):
        enc(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="init"):
        FSPool(4, init="uniform")


def test_fspool_table_initialisations():
    torch.manual_seed(0)
    normal = FSPool(512, set_size=64)
    fan_out = FSPool(512, set_size=64, init="fan_out")  # kaiming_normal_(mode="fan_out"): std 1/sqrt(64)
    assert normal.weight.std().item() == pytest.approx(1.0, rel=0.02)
    assert fan_out.weight.std().item() == pytest.approx(64**-0.5, rel=0.02)
    assert FSEncoder(3, 8, 512, set_size=10, fspool_init="fan_out").pool.weight.std().item() == pytest.approx(
        10**-0.5, rel=0.05
    )


@pytest.mark.parametrize("pooling", ["fspool", "max"])
def test_a_padded_row_equal_to_a_present_one_is_not_its_duplicate(pooling):
    # Padding that happens to repeat a present element must not lend it its rank.
    enc = FSEncoder(set_dim=3, hidden_dim=8, latent_dim=4, pooling=pooling).double()
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    x[0, 0] = x[0, 3]  # the padded element 0 equals the present element 3
    mask = torch.tensor([[False, True, True, True]])
    assert torch.allclose(enc(x, mask), enc(x[:, 1:]), atol=1e-12)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("padding", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_padding_never_reaches_the_result(pooling, padding):
    torch.manual_seed(0)
    encoder = FSEncoder(3, 8, 5, pooling=pooling).double()
    x = torch.randn(2, 6, 3, dtype=torch.double)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    clean = x.clone()
    clean[~mask] = 0.0
    x[~mask] = padding
    out, vjp = encoder.value_and_vjp(x, mask)
    torch.testing.assert_close(encoder(x, mask), encoder(clean, mask))
    torch.testing.assert_close(out, encoder(clean, mask))
    v = torch.randn(2, 5, dtype=torch.double)
    assert torch.isfinite(vjp(v)).all()
    torch.testing.assert_close(encoder(x[:1, :4]), encoder(x, mask)[:1])  # the present elements alone


@pytest.mark.parametrize("pooling", ["fspool", "max"])
def test_a_present_minus_inf_ranks_before_every_padded_element(pooling):
    pool = FSPool(1, set_size=3) if pooling == "fspool" else MaxPool()
    if pooling == "fspool":
        with torch.no_grad():
            pool.weight.copy_(torch.tensor([[2.0], [3.0], [4.0]]))
    h = torch.tensor([[[5.0], [-float("inf")], [1.0]]])
    mask = torch.tensor([[False, True, False]])  # one present element, -inf, after a padded one
    weights = pool.element_weights(h, mask)
    assert weights.view(-1).tolist() == [0.0, 2.0 if pooling == "fspool" else 1.0, 0.0]


@pytest.mark.parametrize("pooling", POOLINGS)
def test_masked_encoder_compiles_and_vmaps_like_eager(pooling):
    enc = FSEncoder(3, 16, 8, set_size=6 if pooling == "fspool" else None, pooling=pooling)
    x = torch.randn(2, 6, 3)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:], mask[0, 1] = False, False
    expected = enc(x, mask)
    assert torch.allclose(torch.compile(enc, fullgraph=True)(x, mask), expected, atol=1e-6)
    per_set = torch.func.vmap(lambda s, m: enc(s[None], m[None])[0])(x, mask)
    assert torch.allclose(per_set, expected, atol=1e-6)
    empty = mask.clone()
    empty[1] = False  # eagerly on CPU an error (above); compiled, the empty set pools to 0
    assert torch.equal(torch.compile(enc, fullgraph=True)(x, empty)[1], torch.zeros(8))


@pytest.mark.skipif(not torch.backends.cuda.is_built(), reason="fake CUDA tensors need a CUDA build of torch")
@pytest.mark.parametrize("set_size", [None, 6])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_on_a_gpu_a_masked_encoder_and_its_vjp_stay_on_the_device_and_never_read_a_value(pooling, set_size):
    """Fake CUDA tensors (no GPU needed) take the branches the encoder takes off the CPU (canonical
    keys, no mask check): an op that mixed in a CPU tensor or read a value to the host would raise."""
    with FakeTensorMode(allow_non_fake_inputs=True), torch.device("cuda"):
        enc = FSEncoder(set_dim=3, hidden_dim=16, latent_dim=5, set_size=set_size, pooling=pooling)
        x = torch.randn(4, 6, 3)
        mask = torch.ones(4, 6, dtype=torch.bool)
        out, vjp = enc.value_and_vjp(x, mask)
        grad = vjp(torch.randn(4, 5))
        assert out.device.type == grad.device.type == enc(x, mask).device.type == "cuda"
        assert grad.shape == x.shape


@pytest.mark.parametrize("masked", [False, True])
def test_compiled_off_the_cpu_the_encoders_graphs_read_no_cpu_tensor(masked, monkeypatch):
    """Off the CPU (here the meta device, which runs no kernels) every tensor that a compiled graph of
    the encoder reads must be on that device: a CPU one, such as a constant of the library's code,
    would be copied to the GPU in every call and keep CUDA graphs from capturing the step. The
    fingerprint multipliers come from the encoder's buffer, not from a cache filled inside the graph."""
    import idspn.ranking

    monkeypatch.setattr(idspn.ranking, "_MULTIPLIERS", {})  # nothing filled by an earlier eager call
    devices = []

    def recording_backend(gm, example_inputs):
        devices.extend(t.device.type for t in example_inputs if isinstance(t, torch.Tensor))
        return gm.forward

    enc = FSEncoder(set_dim=3, hidden_dim=16, latent_dim=5, set_size=6).to("meta")
    x, v = torch.randn(4, 6, 3, device="meta"), torch.randn(4, 5, device="meta")
    mask = torch.ones(4, 6, dtype=torch.bool, device="meta") if masked else None

    def value_and_grad(x, v):
        out, vjp = enc.value_and_vjp(x, mask)
        return out, vjp(v)

    out, grad = torch.compile(value_and_grad, backend=recording_backend, fullgraph=True)(x, v)
    pooled = torch.compile(enc, backend=recording_backend, fullgraph=True)(x, mask)
    assert out.device.type == grad.device.type == pooled.device.type == "meta"
    assert devices and set(devices) == {"meta"}


def test_the_fingerprint_table_moves_with_the_encoder_and_is_not_saved():
    enc = FSEncoder(set_dim=3, hidden_dim=16, latent_dim=5).double().to("meta")
    assert enc.fingerprint_table.device.type == "meta" and enc.fingerprint_table.dtype == torch.int64
    assert enc.fingerprint_table.shape == (16, 3)  # four words per float64 feature, a mask column
    assert "fingerprint_table" not in enc.state_dict()
