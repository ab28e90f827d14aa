"""Property-based fuzz of the public API's argument checking (Hypothesis).

Whatever it is given, a constructor or function either works or raises ``ValueError`` whose message
names the argument it rejects; no other exception escapes, and what it returns is well formed.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idspn import IDSPN, FSEncoder, FSPool, InnerLoopDivergence, hungarian_loss

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=40),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from(["", "x", "approx", "cg", "unroll", "random", "zeros", "learned", "simplex", "fspool", "sum"]),
)

DECODER_ARGS = (
    "iters",
    "lr",
    "momentum",
    "grad_clip",
    "init",
    "init_std",
    "reg",
    "projection",
    "project_init",
    "fixed_dim",
    "backward",
    "cg_iters",
    "cg_gamma",
    "cg_tol",
    "compile",
    "check_finite",
)


@FUZZ
@given(name=st.sampled_from(DECODER_ARGS), value=ANY_VALUE)
def test_idspn_accepts_or_names_the_argument(name, value):
    torch.manual_seed(0)
    encoder = FSEncoder(2, 8, 4, set_size=3)
    try:
        decoder = IDSPN(encoder, 3, 2, **{name: value})
    except ValueError as err:
        assert name in str(err), (name, value, str(err))
        return
    if decoder.fixed_dim or decoder.compile_mode is not None:
        return  # a valid fixed_dim needs a wider encoder; compiling is tested elsewhere
    decoder.iters = min(decoder.iters, 5)
    try:
        y = decoder(torch.randn(2, 4))
    except ValueError as err:
        pytest.fail(f"IDSPN({name}={value!r}) was accepted but its forward raised {err}")
    except InnerLoopDivergence:  # divergence is a named error of its own; any other escapes
        return
    assert y.shape == (2, 3, 2)


ENCODER_ARGS = ("set_dim", "hidden_dim", "latent_dim", "pooling", "n_pieces", "set_size")


@FUZZ
@given(name=st.sampled_from(ENCODER_ARGS), value=ANY_VALUE)
def test_fsencoder_accepts_or_names_the_argument(name, value):
    kwargs = {"set_dim": 2, "hidden_dim": 8, "latent_dim": 4, **{name: value}}
    try:
        encoder = FSEncoder(**kwargs)
    except ValueError as err:
        assert name in str(err), (name, value, str(err))
        return
    n = encoder.pool.set_size if isinstance(encoder.pool, FSPool) and encoder.pool.set_size else 3
    out = encoder(torch.randn(2, n, encoder.set_dim))
    assert out.shape == (2, encoder.latent_dim) and torch.isfinite(out).all()


@FUZZ
@given(
    batch=st.integers(0, 3),
    size=st.integers(0, 4),
    dim=st.integers(1, 3),
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64]),
    other_dtype=st.booleans(),
    mask_kind=st.sampled_from(["none", "bool", "float", "wrong-shape", "all-false"]),
    pairwise=st.sampled_from(["mse", "huber", "l1", "bce"]),
    fill=st.sampled_from([0.0, math.inf, math.nan, 1e30]),
)
def test_hungarian_loss_answers_or_names_the_argument(batch, size, dim, dtype, other_dtype, mask_kind, pairwise, fill):
    pred = torch.rand(batch, size, dim).to(dtype)
    target = torch.rand(batch, size, dim).to(torch.float64 if other_dtype and dtype != torch.float64 else dtype)
    mask = {
        "none": None,
        "bool": torch.arange(size).expand(batch, size) < max(size - 1, 1),
        "float": torch.ones(batch, size),
        "wrong-shape": torch.ones(batch, size + 1, dtype=torch.bool),
        "all-false": torch.zeros(batch, size, dtype=torch.bool),
    }[mask_kind]
    if mask is not None and mask.dtype == torch.bool and mask.shape == (batch, size) and pred.is_floating_point():
        big = min(fill, torch.finfo(dtype).max) if math.isfinite(fill) else fill
        pred = pred.masked_fill(~mask.unsqueeze(-1), big)  # padding may hold anything
    try:
        loss = hungarian_loss(pred, target, pairwise=pairwise, mask=mask)
    except ValueError as err:
        assert any(word in str(err) for word in ("pred", "target", "mask", "pairwise")), str(err)
        return
    assert loss.dim() == 0 and torch.isfinite(loss) and loss >= 0
