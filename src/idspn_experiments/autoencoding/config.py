"""Config of the random-multiset autoencoding experiment (Section 4.2, Appendix F.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from idspn_experiments.engine.config import AtLeast, Below, ExperimentConfig, PositiveFloat, PositiveInt, TrainConfig

__all__ = ["AutoencodingDataConfig", "AutoencodingModelConfig", "AutoencodingConfig"]


@dataclass
class AutoencodingDataConfig:
    """The generated data (Appendix F.2 "Dataset"); every split is regenerated from the run's seed."""

    set_size: PositiveInt = 8  # n: elements per multiset, in {2, 4, 8, 16, 32} in the paper
    set_dim: PositiveInt = 8  # d: dimension of every element, in {2, 4, 8, 16, 32} in the paper
    train_size: PositiveInt = 64000  # training multisets
    test_size: PositiveInt = 6400  # held-out multisets; the loss on them is the reported metric


@dataclass
class AutoencodingModelConfig:
    """The autoencoder (Appendix F.2 "Models"): FSPool set encoder -> z -> DSPN or iDSPN decoder."""

    backward: Literal["approx", "unroll", "cg"] = "approx"  # "approx": iDSPN (Eq. 9); "unroll": DSPN
    momentum: Annotated[float, Below(1)] = 0.9  # Nesterov momentum of the inner loop (0.9 iDSPN+mom; 0 iDSPN and DSPN)
    pooling: Literal["fspool", "sum", "mean"] = "fspool"  # pooling of both set encoders (Table 6: sum, mean)
    iters: PositiveInt = 20  # inner gradient steps, in {10, 20, 40} in the paper
    hidden_dim: PositiveInt = 512  # width of the per-element MLP of both set encoders
    latent_dim: PositiveInt = 512  # size of z, the permutation-invariant bottleneck
    lr: PositiveFloat = 1.0  # inner learning rate
    grad_clip: PositiveFloat | None = (
        None  # clip each example's inner gradient to this norm (None: off, as in the paper)
    )
    init_std: PositiveFloat = 0.1**0.5  # std of the learned initial set Y0 at initialisation: N(0, I/10)
    reg: Annotated[float, AtLeast(0)] = (
        0.1  # lambda of the regulariser lambda/2 * (mean or sum over the N x D entries of (Y - Y0)^2)
    )
    reg_reduction: Literal["mean", "sum"] = "mean"  # "mean" as the original code (IDSPN(reg=lambda / (N D))), or "sum"
    fspool_init: Literal["fan_out", "normal"] = "fan_out"  # FSPool tables: N(0, 1/N) as the original code, or N(0, 1)
    compile: bool = False  # torch.compile one inner step of the decoder (IDSPN(compile=True))


def _autoencoding_train() -> TrainConfig:
    # 40 epochs of 64,000 sets at batch 128; the last model is reported (no selection, Appendix F.2).
    return TrainConfig(
        steps=20000,
        batch_size=128,
        lr=1e-3,
        eval_every=20000,
        checkpoint_every=500,
        eval_batch_size=512,
        select_metric=None,
    )


@dataclass
class AutoencodingConfig(ExperimentConfig):
    """Full config of one autoencoding run."""

    experiment: str = "autoencoding"  # registry name of this experiment
    train: TrainConfig = field(default_factory=_autoencoding_train)  # optimisation schedule
    data: AutoencodingDataConfig = field(default_factory=AutoencodingDataConfig)  # generated data
    model: AutoencodingModelConfig = field(default_factory=AutoencodingModelConfig)  # the model
