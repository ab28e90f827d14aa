"""Config of the CLEVR object property prediction experiment (Section 4.3, Appendices E.3 and F.3)."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Annotated, Literal

from idspn_experiments.engine.config import AtLeast, Below, Bound, ExperimentConfig, PositiveFloat, PositiveInt

__all__ = ["ClevrDataConfig", "ClevrModelConfig", "ClevrConfig", "MODEL_NAMES", "COORD_RANGE_NAMES"]

ModelName = Literal["idspn", "dspn", "slot_attention", "slot_mlp"]
MODEL_NAMES: tuple[str, ...] = typing.get_args(ModelName)
CoordRange = Literal["0..1", "-1..1", "-3..3"]
COORD_RANGE_NAMES: tuple[str, ...] = typing.get_args(CoordRange)


@dataclass
class ClevrDataConfig:
    """Where the images come from and how they are prepared (Appendix F.3, first paragraph)."""

    root: str | None = None  # real CLEVR: the CLEVR_v1.0 folder or its parent; None: generate CLEVR-format data
    work_dir: str | None = (
        None  # generated scenes and image caches; None: $IDSPN_DATA_DIR/clevr or ~/.cache/idspn/clevr
    )
    image_size: Annotated[int, AtLeast(8)] = (
        128  # side of the square model input; the whole 480x320 image is resized (no crop)
    )
    train_size: PositiveInt | None = (
        None  # training scenes: generated count, or the first ones of real CLEVR (None: all)
    )
    val_size: PositiveInt | None = None  # evaluation scenes (CLEVR's val split, the paper's test set), as train_size
    monitor_size: Annotated[int, AtLeast(0)] = (
        0  # first val scenes also scored every train.eval_every steps, for monitoring only
    )
    synth_seed: Annotated[int, AtLeast(0)] = (
        0  # seed of the generated data set (not the run's seed: every run shares the data)
    )
    synth_workers: PositiveInt = 1  # processes that render the generated data set
    cache: bool = True  # decode and resize every image once into work_dir/cache (memory-mapped afterwards)


@dataclass
class ClevrModelConfig:
    """The set predictor; fields a model does not use are ignored by it."""

    name: ModelName = "idspn"  # "idspn" (Eq. 9), "dspn" (unrolled), "slot_attention" or "slot_mlp"
    coord_range: CoordRange = (
        "-1..1"  # coordinates of the targets the model is trained on (Table 3: default, *, dagger)
    )
    # iDSPN and DSPN (Appendix F.3)
    latent_dim: PositiveInt = 512  # size of z: the flattened output of the image encoder
    hidden_dim: PositiveInt = 512  # width of the set encoder Linear(19 -> 512)-ReLU-Linear(512 -> 512)-pool
    pooling: Literal["fspool", "sum", "mean"] = "fspool"  # pooling of the set encoder (Table 7, first block)
    iters: PositiveInt = 20  # inner gradient steps at the start of training
    iters_final: PositiveInt | None = 40  # inner steps from iters_switch on (None: keep iters throughout)
    iters_switch: Annotated[float, Bound(0, 1)] = (
        0.5  # fraction of train.steps after which iters_final is used (50 of 100 epochs)
    )
    eval_iters: PositiveInt | None = None  # inner steps at evaluation; None: those of the end of training
    lr: PositiveFloat = 1.0  # inner learning rate
    momentum: Annotated[float, Below(1)] = (
        0.9  # Nesterov momentum of the inner optimiser (0.5 in Table 7's like-to-like block)
    )
    grad_clip: PositiveFloat | None = 10.0  # clip each example's inner gradient to this L2 norm (None: off)
    init_std: PositiveFloat = 0.31622776601683794  # std of the random initial set N(0, I/10), drawn per example
    fspool_init: Literal["fan_out", "normal"] = "fan_out"  # FSPool table: N(0, 1/N) as the original code, or N(0, 1)
    compile: bool = False  # torch.compile one inner step of the decoder (IDSPN(compile=True))
    # Slot Attention and Slot MLP (Locatello et al., 2020)
    encoder_channels: PositiveInt = 64  # channels of the 4-layer 5x5 CNN encoder
    slot_dim: PositiveInt = 64  # slot size
    slot_iters: PositiveInt = 3  # Slot Attention iterations
    slot_hidden_dim: PositiveInt = 128  # hidden width of the MLP inside Slot Attention
    supervise_all_iters: bool = False  # Slot Attention: average the loss over the prediction of every iteration
    mlp_pool: PositiveInt = 8  # Slot MLP: the feature map is average-pooled to mlp_pool x mlp_pool before flattening


@dataclass
class ClevrConfig(ExperimentConfig):
    """Full config of one CLEVR run."""

    experiment: str = "clevr"  # registry name of this experiment
    data: ClevrDataConfig = field(default_factory=ClevrDataConfig)  # images and targets
    model: ClevrModelConfig = field(default_factory=ClevrModelConfig)  # the set predictor
