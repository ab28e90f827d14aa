"""What an experiment is: a small spec of callables the one training engine drives.

An experiment supplies its config type and five functions; the engine (``engine.py``) owns
everything else: devices, data loading, the optimiser, validation, model selection, checkpoints,
logging and torchrun data parallelism. To add an experiment, build an :class:`Experiment` and list
it in ``registry.py``::

    MY_EXPERIMENT = Experiment(
        name="my-experiment",
        config_type=MyConfig,            # subclass of ExperimentConfig
        build_data=build_my_data,        # (cfg) -> DataSplits
        build_model=build_my_model,      # (cfg) -> nn.Module
        loss=my_loss,                    # (model, batch, cfg) -> (scalar loss, {name: float})
        eval_step=my_eval_step,          # (model, batch, cfg) -> {name: Tensor (B, ...)}
    )

Contracts:
    * ``loss`` must run the model through ``model(...)`` (its ``forward``): under torchrun the
      model is wrapped in DistributedDataParallel, which synchronises gradients only for calls to
      ``forward``. It may draw from torch's global RNG (e.g. data augmentation, random initial
      sets): that stream is seeded per run and restored on resume.
    * ``eval_step`` runs under ``torch.no_grad()`` on the unwrapped model and returns tensors whose
      first dimension is the batch; the engine concatenates them over the whole split (and over
      processes) and hands them to ``summarize``. The default summary is the mean of each tensor,
      right for per-sample metrics; pooled metrics (e.g. average precision over a data set)
      supply their own ``summarize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from torch import Tensor, nn
from torch.utils.data import Dataset

from idspn.experiments.config import ExperimentConfig

__all__ = ["DataSplits", "Experiment", "mean_summary"]

C = TypeVar("C", bound=ExperimentConfig)
Batch = Any  # whatever the collate function returns: usually a dict of tensors


@dataclass
class DataSplits:
    """The data of one run. ``val`` selects the model; ``test`` scores the selected model."""

    train: Dataset  # training examples, indexed 0..len-1
    val: Dataset | None = None  # validation split; None: no validation (the last model is reported)
    test: Dataset | None = None  # test split; None: report validation metrics only
    collate: Callable[[list[Any]], Batch] | None = None  # batch builder; None: torch's default_collate


def mean_summary(outputs: dict[str, Tensor], cfg: ExperimentConfig) -> dict[str, float]:
    """Default ``summarize``: the mean over all examples of each per-example tensor."""
    return {name: float(values.double().mean()) for name, values in outputs.items()}


@dataclass(frozen=True)
class Experiment(Generic[C]):
    """A registered experiment: config type plus the data, model, loss and metric functions."""

    name: str  # registry key; presets name it in their "experiment" field
    config_type: type[C]  # the experiment's config dataclass
    build_data: Callable[[C], DataSplits]  # datasets of a run, generated or loaded from cfg (and cfg.seed)
    build_model: Callable[[C], nn.Module]  # a freshly initialised model (on CPU)
    loss: Callable[[nn.Module, Batch, C], tuple[Tensor, dict[str, float]]]  # training loss and logs
    eval_step: Callable[[nn.Module, Batch, C], dict[str, Tensor]]  # per-example outputs of one batch
    summarize: Callable[[dict[str, Tensor], C], dict[str, float]] = mean_summary  # outputs -> metrics
    before_step: Callable[[nn.Module, int, C], None] | None = None  # hook before training step k (schedules)
    description: str = ""  # one line for `idspn list`
