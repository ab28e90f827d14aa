"""Config of the class-specific numbering experiment (Appendix F.1)."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal

from idspn.experiments.config import ExperimentConfig

__all__ = ["NumberingDataConfig", "NumberingModelConfig", "NumberingConfig", "MODEL_NAMES"]

ModelName = Literal["deepsets", "transformer_no_pe", "transformer_random_pe", "transformer_pe", "bilstm", "dspn", "idspn"]
MODEL_NAMES: tuple[str, ...] = typing.get_args(ModelName)


@dataclass
class NumberingDataConfig:
    """The generated data (Appendix F.1 "Dataset"); every split is regenerated from the run's seed."""

    classes: int = 4  # number of input classes (4 in Table 2; 4 or 8 in Table 4)
    set_size: int = 64  # n: elements per multiset, also the width of the one-hot ID of the target
    train_size: int = 640  # training multisets: 640 x {1, 10, 100} in the paper
    val_size: int = 6400  # validation multisets (model selection)
    test_size: int = 64000  # test multisets (reported accuracy)
    augment: bool = False  # permute each training multiset at random at every step (Table 4 "+ DA")


@dataclass
class NumberingModelConfig:
    """The model (Appendix F.1 "Models"); fields a model does not use are ignored by it."""

    name: ModelName = "idspn"  # which model (see numbering/models.py)
    hidden_dim: int = 256  # width of every model (256 for DSPN/iDSPN/DeepSets, 64 for the others, x2 for 8 classes)
    latent_dim: int = 256  # DSPN/iDSPN: size of z (equal to hidden_dim in the paper)
    iters: int = 20  # DSPN/iDSPN: inner gradient steps
    inner_lr: float = 1.0  # DSPN/iDSPN: inner learning rate
    momentum: float = 0.9  # DSPN/iDSPN: Nesterov momentum of the inner loop (0.9 iDSPN, 0 DSPN)
    inner_grad_clip: float | None = 40.0  # DSPN/iDSPN: clip each example's inner gradient to this norm (None: off)
    init_std: float = 0.1  # DSPN/iDSPN: std of the fresh random initial set drawn at every forward
    project_init: bool = True  # DSPN/iDSPN: project the initial set onto the simplex before the first step (original code)
    fspool_init: Literal["fan_out", "normal"] = "fan_out"  # FSPool tables: N(0, 1/N) as the original code, or N(0, 1)
    compile: bool = False  # DSPN/iDSPN: torch.compile one inner step (IDSPN(compile=True))
    heads: int = 8  # transformers: attention heads
    layers: int = 2  # transformers: encoder and decoder layers each; BiLSTM: stacked layers


@dataclass
class NumberingConfig(ExperimentConfig):
    """Full config of one numbering run."""

    experiment: str = "numbering"  # registry name of this experiment
    data: NumberingDataConfig = field(default_factory=NumberingDataConfig)  # generated data
    model: NumberingModelConfig = field(default_factory=NumberingModelConfig)  # the model
