import pytest
import torch

from idspn import hungarian_loss
from idspn_experiments.autoencoding.config import AutoencodingConfig
from idspn_experiments.autoencoding.models import MODEL_KINDS, build_autoencoder
from idspn_experiments.autoencoding.task import AUTOENCODING, autoencoding_loss, per_set_loss
from idspn_experiments.engine.config import load_config


def _cfg(kind, seed=0, *extra):
    return load_config(
        AutoencodingConfig,
        "autoencoding-smoke",
        [*MODEL_KINDS[kind].overrides, f"seed={seed}", "data.set_size=3", "data.set_dim=2", *extra],
    )


def test_same_seed_same_weights_across_model_kinds():
    models = {kind: build_autoencoder(_cfg(kind)) for kind in MODEL_KINDS}
    reference = dict(models["dspn"].named_parameters())
    for kind, model in models.items():
        params = dict(model.named_parameters())
        shared = set(params) & set(reference)
        # sum/mean pooling only lack FSPool's weights; everything else is shared and equal
        assert set(reference) - shared <= {"input_encoder.pool.weight", "decoder.encoder.pool.weight"}
        for name in shared:
            assert torch.equal(params[name], reference[name]), (kind, name)
    other = dict(build_autoencoder(_cfg("dspn", seed=1)).named_parameters())
    assert all(not torch.equal(other[name], reference[name]) for name in reference)


@torch.no_grad()
def test_initialisation_follows_the_paper():
    model = build_autoencoder(
        _cfg("idspn-mom", 0, "model.hidden_dim=512", "model.latent_dim=512", "data.set_size=32", "data.set_dim=32")
    )
    init_set = model.decoder.init_set  # Y0 ~ N(0, I/10)
    assert init_set.shape == (32, 32) and abs(float(init_set.std()) - 0.1**0.5) < 0.02
    lin2 = model.input_encoder.lin2.weight
    assert float(lin2.abs().max()) <= 512**-0.5  # PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert abs(float(lin2.std()) - 512**-0.5 / 3**0.5) < 1e-3
    assert model.decoder.reg == pytest.approx(0.1 / (32 * 32)) and model.decoder.init == "learned"
    table = model.decoder.encoder.pool.weight  # kaiming_normal_(mode="fan_out") of the (N, L) table
    assert table.shape == (32, 512) and abs(float(table.std()) - 32**-0.5) < 0.01
    assert model.input_encoder is not model.decoder.encoder  # separate weights, same architecture


def test_dspn_and_idspn_without_momentum_share_the_forward_pass():
    x = torch.randn(5, 3, 2)
    dspn, idspn = build_autoencoder(_cfg("dspn")), build_autoencoder(_cfg("idspn"))
    with torch.no_grad():
        assert torch.allclose(dspn(x), idspn(x), atol=1e-6)
    assert torch.allclose(dspn(x), idspn(x), atol=1e-6)  # with gradients too (unrolled vs approximate)


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_every_parameter_learns_through_the_loss(kind):
    model = build_autoencoder(_cfg(kind))
    x = torch.randn(4, 3, 2)
    loss, _ = autoencoding_loss(model, x, _cfg(kind), _cfg(kind).model.iters)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert float(model.decoder.init_set.grad.abs().sum()) > 0  # through the regulariser (Section 3)


def test_per_set_loss_averages_to_the_training_loss():
    pred, target = torch.randn(6, 3, 2), torch.randn(6, 3, 2)
    per_set = per_set_loss(pred, target)
    assert per_set.shape == (6,)
    assert torch.allclose(per_set.mean(), hungarian_loss(pred, target, pairwise="huber"))
    assert torch.allclose(per_set_loss(target[:, [2, 0, 1]], target), torch.zeros(6))  # order does not matter


def test_build_data_sizes_follow_the_config():
    cfg = _cfg("idspn")
    data = AUTOENCODING.build_data(cfg)
    assert len(data.train) == cfg.data.train_size and len(data.test) == cfg.data.test_size and data.val is None
    assert data.train[0].shape == (3, 2)


def _original_objective(model, z, y, y0):
    """The original code's inner objective for one batch, written from its formula (docs/departures.md, row 3):
    ``0.5 * mse(g(Y), z).sum(0).mean() + 0.1 * 0.5 * mse(Y, Y0).sum(0).mean()``."""
    g = model.decoder.encoder(y)
    representation = 0.5 * (g - z).pow(2).sum(0).mean()
    regulariser = 0.5 * (y - y0).pow(2).sum(0).mean()
    return representation + 0.1 * regulariser


@pytest.mark.parametrize("steps", [1, 3])
def test_inner_updates_are_the_original_codes(steps):
    # Nesterov SGD (torch.optim.SGD, as the original) on the original's objective, from the same Y0.
    cfg = _cfg("idspn-mom", 0, f"model.iters={steps}")
    model = build_autoencoder(cfg).double()
    x = torch.randn(4, 3, 2, dtype=torch.float64)
    with torch.no_grad():
        z = model.input_encoder(x)
        got = model.decoder(z)
    y0 = model.decoder.init_set.detach().expand(4, 3, 2)
    y = y0.clone().requires_grad_()
    sgd = torch.optim.SGD([y], lr=1.0, momentum=0.9, nesterov=True)
    for _ in range(steps):
        (y.grad,) = torch.autograd.grad(_original_objective(model, z, y, y0), y)
        sgd.step()
    assert torch.allclose(got, y.detach(), atol=1e-12)
    if steps == 1:
        return  # at Y0 the regulariser has no gradient
    summed = build_autoencoder(_cfg("idspn-mom", 0, f"model.iters={steps}", "model.reg_reduction=sum")).double()
    with torch.no_grad():
        assert not torch.allclose(summed.decoder(z), got, atol=1e-6)  # the project's earlier, N x D times stronger term
