"""The iDSPN model of Appendix F.3 and the registry of CLEVR models."""

import pytest
import torch

from idspn_experiments.clevr.config import MODEL_NAMES, ClevrConfig
from idspn_experiments.clevr.models import ClevrIDSPN, ResNetImageEncoder, resnet_feature_size
from idspn_experiments.clevr.task import build_model
from idspn_experiments.engine.config import load_config


@pytest.mark.parametrize(
    ("image_size", "grid", "channels"),
    [(128, 2, 128), (256, 4, 32), (64, 1, 512), (96, 2, 128), (32, 1, 512)],
)
def test_latent_is_512_d_with_the_papers_grid(image_size, grid, channels):
    encoder = ResNetImageEncoder(image_size).eval()
    assert (encoder.grid_size, encoder.reduce.out_channels) == (grid, channels)
    with torch.no_grad():
        features = encoder.trunk(torch.rand(1, 3, image_size, image_size))
        z = encoder(torch.rand(2, 3, image_size, image_size))
    assert features.shape[-1] == resnet_feature_size(image_size)  # 4x4x512 at 128, 8x8x512 at 256
    assert z.shape == (2, 512)


def test_sizes_the_latent_cannot_be_split_over_are_rejected():
    with pytest.raises(ValueError, match="latent_dim=512 must be divisible by the 3x3 output grid"):
        ResNetImageEncoder(160)
    with pytest.raises(ValueError, match="images must have shape"):
        ResNetImageEncoder(64)(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_maps_images_to_sets_of_19_d_objects(name):
    cfg = load_config(ClevrConfig, "clevr-smoke", [f"model.name={name}"])
    model = build_model(cfg)
    pred = model(torch.rand(3, 3, 32, 32))
    assert pred.shape == (3, 10, 19) and torch.isfinite(pred).all()
    pred.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_idspn_follows_the_papers_setup():
    model = ClevrIDSPN(128, 10, 19)
    decoder = model.decoder
    assert decoder.backward_mode == "approx" and decoder.init == "random" and decoder.iters == 20
    assert (decoder.optimizer.momentum, decoder.optimizer.grad_clip, decoder.optimizer.lr) == (0.9, 10.0, 1.0)
    encoder = decoder.encoder
    assert (encoder.set_dim, encoder.hidden_dim, encoder.latent_dim, encoder.pooling) == (19, 512, 512, "fspool")
    images = torch.rand(2, 3, 128, 128)
    assert model(images, iters=40).shape == model(images).shape == (2, 10, 19)  # iters per call, default 20
    dspn = build_model(load_config(ClevrConfig, "clevr-paper", ["model.name=dspn", "model.pooling=mean"]))
    assert dspn.decoder.backward_mode == "unroll" and dspn.decoder.encoder.pooling == "mean"
