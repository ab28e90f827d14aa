"""The autoencoding experiment spec: random sets, the set autoencoder, Hungarian Huber loss.

Loss and metric (Appendix F.2): the Hungarian loss (Eq. 44) with the Huber loss as pairwise loss
(quadratic below 1, linear above), averaged over element dims, elements and sets. The reported
number is this loss on the 6,400 held-out sets after the last epoch, without early stopping or
model selection; the paper calls that split "validation" in Section 4.2 and "test" in Appendix
F.2, the engine calls it ``test``.
"""

from __future__ import annotations

from torch import Tensor, nn

from idspn import hungarian_loss
from idspn_experiments.autoencoding.config import AutoencodingConfig
from idspn_experiments.autoencoding.data import RandomSets
from idspn_experiments.autoencoding.models import build_autoencoder
from idspn_experiments.engine.spec import DataSplits, Experiment

__all__ = ["AUTOENCODING", "build_data", "autoencoding_loss", "autoencoding_eval_step", "per_set_loss"]


def build_data(cfg: AutoencodingConfig, progress: bool = False) -> DataSplits:
    """Train and held-out sets regenerated from ``cfg.seed``; no validation split (last model reported)."""
    d = cfg.data
    return DataSplits(
        train=RandomSets(d.train_size, d.set_size, d.set_dim, cfg.seed, "train"),
        test=RandomSets(d.test_size, d.set_size, d.set_dim, cfg.seed, "test"),
    )


def per_set_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``(B, N, D), (B, N, D) -> (B,)`` Hungarian Huber loss of every set (mean over elements and dims)."""
    return hungarian_loss(pred, target, pairwise="huber", reduction="none").mean(1)  # (B,)


def autoencoding_loss(
    model: nn.Module, batch: Tensor, cfg: AutoencodingConfig, iters: int
) -> tuple[Tensor, dict[str, float]]:
    """Hungarian Huber loss between the reconstruction and the input set ``batch (B, N, D)``."""
    pred = model(batch, iters=iters)  # (B, N, D)
    return hungarian_loss(pred, batch, pairwise="huber"), {}


def autoencoding_eval_step(model: nn.Module, batch: Tensor, cfg: AutoencodingConfig, iters: int) -> dict[str, Tensor]:
    """Per-set ``loss (B,)``: its mean over the split is the reported reconstruction loss."""
    return {"loss": per_set_loss(model(batch, iters=iters), batch)}


AUTOENCODING: Experiment[AutoencodingConfig] = Experiment(
    name="autoencoding",
    config_type=AutoencodingConfig,
    build_data=build_data,
    build_model=build_autoencoder,
    loss=autoencoding_loss,
    eval_step=autoencoding_eval_step,
    description="random multiset autoencoding (Section 4.2, Tables 5 and 6)",
    metrics=("loss",),
)
