"""Config of the class-specific numbering experiment (Appendix F.1)."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Literal

from idspn_experiments.engine.config import Below, ExperimentConfig, PositiveFloat, PositiveInt

__all__ = ["NumberingDataConfig", "NumberingModelConfig", "NumberingConfig", "MODEL_NAMES"]

ModelName = Literal[
    "deepsets", "transformer_no_pe", "transformer_random_pe", "transformer_pe", "bilstm", "dspn", "idspn"
]
MODEL_NAMES: tuple[str, ...] = typing.get_args(ModelName)


@dataclass
class NumberingDataConfig:
    """The generated data (Appendix F.1 "Dataset"); every split is regenerated from the run's seed."""

    classes: PositiveInt = 4  # number of input classes (4 in Table 2; 4 or 8 in Table 4)
    set_size: PositiveInt = 64  # n: elements per multiset, also the width of the one-hot ID of the target
    train_size: PositiveInt = 640  # training multisets: 640 x {1, 10, 100} in the paper
    val_size: PositiveInt = 6400  # validation multisets (model selection)
    test_size: PositiveInt = 64000  # test multisets (reported accuracy)
    augment: bool = False  # permute each training multiset at random at every step (Table 4 "+ DA")


@dataclass
class NumberingModelConfig:
    """The model (Appendix F.1 "Models"); fields a model does not use are ignored by it."""

    name: ModelName = "idspn"  # which model (see numbering/models.py)
    hidden_dim: PositiveInt = (
        256  # width of every model (256 for DSPN/iDSPN/DeepSets, 64 for the others, x2 for 8 classes)
    )
    latent_dim: PositiveInt = 256  # DSPN/iDSPN: size of z (equal to hidden_dim in the paper)
    iters: PositiveInt = 20  # DSPN/iDSPN: inner gradient steps
    lr: PositiveFloat = 1.0  # DSPN/iDSPN: inner learning rate
    momentum: Annotated[float, Below(1)] = 0.9  # DSPN/iDSPN: Nesterov momentum of the inner loop (0.9 iDSPN, 0 DSPN)
    grad_clip: PositiveFloat | None = 40.0  # DSPN/iDSPN: clip each example's inner gradient to this norm (None: off)
    init_std: PositiveFloat = 0.1  # DSPN/iDSPN: std of the fresh random initial set drawn at every forward
    project_init: bool = (
        True  # DSPN/iDSPN: project the initial set onto the simplex before the first step (original code)
    )
    fspool_init: Literal["fan_out", "normal"] = "fan_out"  # FSPool tables: N(0, 1/N) as the original code, or N(0, 1)
    compile: bool = False  # DSPN/iDSPN: torch.compile one inner step (IDSPN(compile=True))
    heads: PositiveInt = 8  # transformers: attention heads
    layers: PositiveInt = 2  # transformers: encoder and decoder layers each; BiLSTM: stacked layers

    def checks(self) -> Iterator[tuple[str, str]]:
        if self.name.startswith("transformer") and self.hidden_dim % self.heads:
            yield "heads", f"must divide model.hidden_dim={self.hidden_dim} for a transformer, got {self.heads}"


@dataclass
class NumberingConfig(ExperimentConfig):
    """Full config of one numbering run."""

    experiment: str = "numbering"  # registry name of this experiment
    data: NumberingDataConfig = field(default_factory=NumberingDataConfig)  # generated data
    model: NumberingModelConfig = field(default_factory=NumberingModelConfig)  # the model
