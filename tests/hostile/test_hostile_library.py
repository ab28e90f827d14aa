"""The library under hostile input: tensors of the wrong kind, non-finite values, bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support import Clear, Correct, cases, run_case
from torch import nn

from idspn import (
    IDSPN,
    FSEncoder,
    FSPool,
    InnerLoopDivergence,
    MaxPool,
    MeanPool,
    ModuleSetEncoder,
    SumPool,
    classify_equivariance,
    hungarian_loss,
    hungarian_match,
    project_simplex,
)
from idspn.metrics import ObjectLayout, attribute_accuracy, image_average_precision, set_average_precision

B, N, D, L = 2, 4, 3, 5
LAYOUT = ObjectLayout(coords=slice(0, 2), attributes=(slice(2, 4),), presence=4, coord_scale=1.0)
THRESHOLDS = (math.inf, 0.5)


def _x(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _encoder(**kwargs) -> FSEncoder:
    torch.manual_seed(0)
    return FSEncoder(D, 8, L, **kwargs)


def _decoder(**kwargs) -> IDSPN:
    return IDSPN(_encoder(set_size=N), N, D, iters=3, **kwargs)


NO_MASK = torch.zeros(B, N, dtype=torch.bool)
ONE_EMPTY = torch.tensor([[True, True, False, False], [False, False, False, False]])


# --- hungarian_loss: padding, non-finite values, dtypes ---------------------------------------


def _padded(value: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    pred, target = _x(B, N, D), _x(B, N, D) + 1
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    target = target.masked_fill(~mask.unsqueeze(-1), value)
    pred = pred.masked_fill(~mask.unsqueeze(-1), value)
    return pred, target, mask


def _masked_loss_ignores(value: float) -> tuple:
    pred, target, mask = _padded(value)
    clean_pred, clean_target, _ = _padded(0.0)
    expected = hungarian_loss(clean_pred, clean_target, mask=mask)

    def check(loss: torch.Tensor) -> None:
        assert torch.isfinite(loss) and torch.equal(loss, expected), (loss, expected)

    return (lambda: hungarian_loss(pred, target, mask=mask), Correct(check))


def _nonfinite_present(value: float) -> tuple:
    pred, target = _x(B, N, D), _x(B, N, D, seed=1)
    target[1, 2, 0] = value
    return (lambda: hungarian_loss(pred, target), Clear(ValueError, r"target contains NaN or inf in present elements"))


def _huge_present() -> tuple:
    pred, target = _x(B, N, D), _x(B, N, D, seed=1)
    target[1, 2, 0] = 1e20  # finite: matched in float64, the loss overflows float32 like any MSE would
    expected = hungarian_loss(pred.double(), target.double()).float()
    return (lambda: hungarian_loss(pred, target), Correct(lambda loss: torch.equal(loss, expected)))


def _half(dtype: torch.dtype) -> tuple:
    pred, target = _x(B, N, D, dtype=dtype), _x(B, N, D, dtype=dtype, seed=1)
    pairwise = "huber" if dtype == torch.bfloat16 else "mse"
    expected = hungarian_loss(pred.float(), target.float(), pairwise=pairwise)

    def check(loss: torch.Tensor) -> None:
        assert loss.dtype == dtype and abs(float(loss) - float(expected)) < 2e-2 * float(expected)

    return (lambda: hungarian_loss(pred, target, pairwise=pairwise), Correct(check))


LOSS_CASES = {
    **{f"masked-padding-{v}": _masked_loss_ignores(v) for v in (math.inf, -math.inf, math.nan, 1e20, -1e30)},
    **{f"present-{v}": _nonfinite_present(v) for v in (math.inf, -math.inf, math.nan)},
    "present-1e20": _huge_present(),
    "fp16": _half(torch.float16),
    "bf16": _half(torch.bfloat16),
    "mixed-fp32-fp64": (
        lambda: hungarian_loss(_x(B, N, D), _x(B, N, D, dtype=torch.float64)),
        Clear(ValueError, r"pred and target must have the same dtype"),
    ),
    "float-mask": (
        lambda: hungarian_loss(_x(B, N, D), _x(B, N, D), mask=torch.ones(B, N)),
        Clear(ValueError, r"mask must be a bool tensor"),
    ),
    "numpy-input": (
        lambda: hungarian_loss(_x(B, N, D).numpy(), _x(B, N, D)),
        Clear(ValueError, r"pred must be a floating tensor of shape \(B, N, D\), got ndarray"),
    ),
    "shape-mismatch": (
        lambda: hungarian_loss(_x(B, N, D), _x(B, N, D + 1)),
        Clear(ValueError, r"pred and target"),
    ),
    "float-groups": (
        lambda: hungarian_loss(
            _x(B, N, D), _x(B, N, D), pred_groups=torch.zeros(B, N), target_groups=torch.zeros(B, N)
        ),
        Clear(ValueError, r"pred_groups must be an integer tensor"),
    ),
    "groups-without-a-match": (
        lambda: hungarian_match(
            _x(B, N, D),
            _x(B, N, D),
            pred_groups=torch.zeros(B, N, dtype=torch.long),
            target_groups=torch.ones(B, N, dtype=torch.long),
        ),
        Clear(ValueError, r"group 0 has 4 predictions and 0 targets"),
    ),
    "unknown-pairwise": (
        lambda: hungarian_loss(_x(B, N, D), _x(B, N, D), pairwise="l3"),
        Clear(ValueError, r"pairwise"),
    ),
    "unknown-reduction": (
        lambda: hungarian_loss(_x(B, N, D), _x(B, N, D), reduction="sum"),
        Clear(ValueError, r"reduction must be 'mean' or 'none', got 'sum'"),
    ),
}


@cases("library", LOSS_CASES)
def test_hungarian_loss(call, expected):
    run_case(call, expected)


# --- poolings and encoders: masks, channels, dtypes, meta tensors -----------------------------

POOLS = {"fspool": lambda: FSPool(L, set_size=None), "sum": SumPool, "mean": MeanPool, "max": MaxPool}


def _pool_case(name: str, mask: torch.Tensor) -> tuple:
    return (lambda: POOLS[name]()(_x(B, N, L), mask), Clear(ValueError, r"mask must mark at least one element"))


POOL_CASES = {
    **{f"{name}-all-false-mask": _pool_case(name, NO_MASK) for name in POOLS},
    **{f"{name}-one-empty-set": _pool_case(name, ONE_EMPTY) for name in POOLS},
    "fspool-wrong-channels": (lambda: FSPool(L)(_x(B, N, L + 1)), Clear(ValueError, r"h must have channels=5")),
    "fspool-float-mask": (lambda: FSPool(L)(_x(B, N, L), torch.ones(B, N)), Clear(ValueError, r"mask must be a bool")),
    "fspool-table-wrong-size": (lambda: FSPool(L, set_size=N)(_x(B, N + 1, L)), Clear(ValueError, r"set_size=4")),
    "encoder-all-false-mask": (lambda: _encoder()(_x(B, N, D), NO_MASK), Clear(ValueError, r"mask must mark")),
    "encoder-vjp-all-false-mask": (
        lambda: _encoder().value_and_vjp(_x(B, N, D), NO_MASK),
        Clear(ValueError, r"mask must mark"),
    ),
    "encoder-wrong-dim": (lambda: _encoder()(_x(B, N, D + 1)), Clear(ValueError, r"x must have set_dim=3")),
    "encoder-fp64-input": (
        lambda: _encoder()(_x(B, N, D, dtype=torch.float64)),
        Clear(ValueError, r"x must have the encoder's dtype torch.float32, got torch.float64"),
    ),
    "encoder-int-input": (lambda: _encoder()(torch.ones(B, N, D, dtype=torch.long)), Clear(ValueError, r"floating")),
    "encoder-2d-input": (lambda: _encoder()(_x(N, D)), Clear(ValueError, r"x must have shape \(B, N, D\)")),
    "encoder-empty-set": (lambda: _encoder()(_x(B, 0, D)), Clear(ValueError, r"at least one element")),
    "encoder-meta-tensor": (
        lambda: _encoder().to("meta")(torch.empty(B, N, D, device="meta")),
        Correct(lambda out: out.shape == (B, L) and out.device.type == "meta"),
    ),
    "encoder-bad-pooling": (lambda: FSEncoder(D, 8, L, pooling="median"), Clear(ValueError, r"pooling must be one of")),
    "module-returning-per-element": (
        lambda: ModuleSetEncoder(nn.Linear(D, L), D).value_and_vjp(_x(B, N, D)),
        Clear(ValueError, r"a set encoder must map \(B, N, D\) to \(B, L\)"),
    ),
}


@cases("library", POOL_CASES)
def test_poolings_and_encoders(call, expected):
    run_case(call, expected)


# --- the decoder: inputs, dtypes, non-finite values, hyperparameters --------------------------


def _nan_input(name: str) -> tuple:
    z = _x(B, L)
    y0 = _x(B, N, D)
    kwargs = {"init_set": y0}
    if name == "z":
        z[0, 1] = math.nan
    else:
        y0[1, 0, 0] = math.nan
    return (lambda: _decoder()(z, **kwargs), Clear(ValueError, rf"{name} contains NaN or inf"))


DECODER_CASES = {
    **{
        f"z-{dtype}": (
            lambda dtype=dtype: _decoder()(_x(B, L, dtype=dtype)),
            Clear(ValueError, rf"z must have the decoder's dtype torch.float32, got {dtype}"),
        )
        for dtype in (torch.float16, torch.bfloat16, torch.float64)
    },
    "init-set-fp64": (
        lambda: _decoder()(_x(B, L), init_set=_x(B, N, D, dtype=torch.float64)),
        Clear(ValueError, r"init_set .*dtype"),
    ),
    "init-set-wrong-size": (
        lambda: _decoder()(_x(B, L), init_set=_x(B, N + 1, D)),
        Clear(ValueError, r"init_set must have set_size=4"),
    ),
    "init-set-wrong-batch": (
        lambda: _decoder()(_x(B, L), init_set=_x(B + 1, N, D)),
        Clear(ValueError, r"init_set batch size 3 != z batch size 2"),
    ),
    "init-set-wrong-width": (
        lambda: _decoder()(_x(B, L), init_set=_x(B, N, D + 1)),
        Clear(ValueError, r"init_set must have the decoder's set_dim=3 features"),
    ),
    "fixed-wrong-width": (
        lambda: IDSPN(FSEncoder(D + 2, 8, L, set_size=N), N, D, iters=2, fixed_dim=2)(_x(B, L), fixed=_x(B, N, 3)),
        Clear(ValueError, r"fixed must have the decoder's fixed_dim=2 features"),
    ),
    "fixed-without-fixed-dim": (
        lambda: _decoder()(_x(B, L), fixed=_x(B, N, 2)),
        Clear(ValueError, r"fixed must be given exactly when fixed_dim > 0 \(fixed_dim=0\)"),
    ),
    "z-nan": _nan_input("z"),
    "init-set-nan": _nan_input("init_set"),
    "fixed-nan": (
        lambda: IDSPN(FSEncoder(D + 1, 8, L, set_size=N), N, D, iters=2, fixed_dim=1)(
            _x(B, L), fixed=torch.full((B, N, 1), math.nan)
        ),
        Clear(ValueError, r"fixed contains NaN or inf"),
    ),
    "z-wrong-width": (lambda: _decoder()(_x(B, L + 1)), Clear(ValueError, r"z must have the encoder's latent_dim=5")),
    "z-empty-batch": (lambda: _decoder()(_x(0, L)), Clear(ValueError, r"batch size 0")),
    "z-numpy": (lambda: _decoder()(_x(B, L).numpy()), Clear(ValueError, r"z must be a floating tensor")),
    "iters-zero-at-call": (lambda: _decoder()(_x(B, L), iters=0), Clear(ValueError, r"iters must be")),
    "divergence-named-as-such": (
        lambda: _decoder(lr=1e30)(_x(B, L) * 1e10),
        Clear(InnerLoopDivergence, r"diverged .*lower lr or set grad_clip"),
    ),
    "meta-tensor": (
        lambda: _decoder().to("meta")(torch.empty(B, L, device="meta")),
        Correct(lambda y: y.shape == (B, N, D) and y.device.type == "meta"),
    ),
    **{
        f"hyperparameter-{name}={value}": (
            lambda name=name, value=value: IDSPN(**{"encoder": _encoder(), "set_size": N, "set_dim": D, name: value}),
            Clear(ValueError, rf"{name}"),
        )
        for name, value in (
            ("iters", 0),
            ("iters", 2.5),
            ("lr", 0.0),
            ("lr", -1.0),
            ("lr", math.nan),
            ("momentum", 1.0),
            ("momentum", -0.1),
            ("grad_clip", 0.0),
            ("grad_clip", -1.0),
            ("init", "ones"),
            ("init_std", 0.0),
            ("reg", -1.0),
            ("projection", "cube"),
            ("fixed_dim", -1),
            ("backward", "exact"),
            ("cg_iters", 0),
            ("cg_tol", 0.0),
            ("compile", "fastest"),
            ("set_size", 0),
            ("set_dim", 0),
        )
    },
}


@cases("library", DECODER_CASES)
def test_decoder(call, expected):
    run_case(call, expected)


# --- the equivariance checker and the projection ---------------------------------------------


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


OTHER_CASES = {
    "classify-negative-atol": (
        lambda: classify_equivariance(_identity, atol=-1.0),
        Clear(ValueError, r"atol must be a finite number >= 0, got -1.0"),
    ),
    "classify-nan-atol": (
        lambda: classify_equivariance(_identity, atol=math.nan),
        Clear(ValueError, r"atol must be a finite number >= 0"),
    ),
    "classify-integer-dtype": (
        lambda: classify_equivariance(_identity, dtype=torch.long),
        Clear(ValueError, r"dtype must be a floating dtype, got torch.int64"),
    ),
    "classify-set-size-1": (lambda: classify_equivariance(_identity, set_size=1), Clear(ValueError, r"set_size")),
    "classify-wrong-output": (
        lambda: classify_equivariance(lambda x: x.sum(0)),
        Clear(ValueError, r"f must map \(N, D\) to \(N, D'\)"),
    ),
    "project-simplex-int": (
        lambda: project_simplex(torch.ones(2, 3, dtype=torch.long)),
        Clear(ValueError, r"floating"),
    ),
}


@cases("library", OTHER_CASES)
def test_checker_and_projection(call, expected):
    run_case(call, expected)


# --- metrics: confidences, coordinates, kinds of input ------------------------------------------


def _objects() -> torch.Tensor:
    target = torch.zeros(1, 3, 5)
    target[0, 0, :2] = torch.tensor([0.1, 0.2])
    target[0, 0, 2] = 1.0
    target[0, 0, 4] = 1.0
    return target


def _duplicate_at(confidence: float) -> torch.Tensor:
    pred = _objects().clone()
    pred[0, 0, 4] = 0.9
    pred[0, 1] = pred[0, 0]
    pred[0, 1, 4] = confidence
    return pred


def _ap_of(pred: torch.Tensor) -> dict[float, float]:
    return set_average_precision(pred, _objects(), LAYOUT, THRESHOLDS)


def _nan_coords() -> torch.Tensor:
    pred = torch.zeros(1, 3, 5)
    pred[..., 3] = 1.0  # every other slot predicts the other attribute: no match at any threshold
    pred[0, 0] = _objects()[0, 0]
    pred[0, 0, 0] = math.nan  # the one slot with the right attribute has no position
    pred[0, 0, 4] = 0.9
    return pred


METRIC_CASES = {
    **{
        f"duplicate-at-{c}": (lambda c=c: _ap_of(_duplicate_at(c)), Correct(lambda ap: ap[math.inf] == 1.0))
        for c in (math.nan, -math.inf, 0.0, 0.9)
    },
    **{
        f"image-ap-duplicate-at-{c}": (
            lambda c=c: image_average_precision(_duplicate_at(c), _objects(), LAYOUT, THRESHOLDS),
            Correct(lambda ap: ap[math.inf] == 1.0),
        )
        for c in (math.nan, -math.inf)
    },
    "nan-coordinate-is-a-miss": (lambda: _ap_of(_nan_coords()), Correct(lambda ap: ap[math.inf] == 0.0)),
    "numpy-input": (
        lambda: set_average_precision(_objects().numpy(), _objects(), LAYOUT, THRESHOLDS),
        Clear(ValueError, r"pred must be a torch.Tensor"),
    ),
    "wrong-width": (
        lambda: set_average_precision(torch.zeros(1, 3, 6), _objects(), LAYOUT, THRESHOLDS),
        Clear(ValueError, r"pred must have shape \(B, N, 5\); got \(1, 3, 6\)"),
    ),
    "negative-threshold": (
        lambda: set_average_precision(_objects(), _objects(), LAYOUT, (-1.0,)),
        Clear(ValueError, r"thresholds"),
    ),
    "every-zero": (
        lambda: image_average_precision(_objects(), _objects(), LAYOUT, THRESHOLDS, every=0),
        Clear(ValueError, r"every"),
    ),
    "accuracy-unknown-names": (
        lambda: attribute_accuracy(_objects(), _objects(), LAYOUT, ("a", "b")),
        Clear(ValueError, r"names"),
    ),
    "no-ground-truth": (
        lambda: set_average_precision(torch.zeros(1, 3, 5), torch.zeros(1, 3, 5), LAYOUT, THRESHOLDS),
        Correct(lambda ap: all(np.isnan(v) for v in ap.values())),
    ),
}


@cases("library", METRIC_CASES)
def test_metrics(call, expected):
    run_case(call, expected)


@pytest.mark.parametrize("mask", [NO_MASK, ONE_EMPTY], ids=["library-clear-all-false", "library-clear-one-empty"])
def test_every_pooling_rejects_the_same_masks_as_the_encoder(mask):
    x = _x(B, N, D)
    messages = set()
    for make in (*POOLS.values(), lambda: _encoder(), lambda: _encoder().value_and_vjp):
        target = make()
        with pytest.raises(ValueError) as info:
            target(
                x if isinstance(target, FSEncoder) or callable(getattr(target, "__self__", None)) else _x(B, N, L), mask
            )
        messages.add(str(info.value))
    assert len(messages) == 1, messages
