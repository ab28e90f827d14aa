"""What an experiment is: a small spec of callables the one training engine drives.

An experiment supplies its config type and a few functions; the engine (``engine/train.py``) owns
everything else: devices, data loading, the optimiser, validation, model selection, checkpoints,
logging and torchrun data parallelism. To add an experiment, build an :class:`Experiment` and list
it in ``registry.py``::

    MY_EXPERIMENT = Experiment(
        name="my-experiment",
        config_type=MyConfig,            # subclass of ExperimentConfig
        build_data=build_my_data,        # (cfg, progress) -> DataSplits
        build_model=build_my_model,      # (cfg) -> nn.Module
        loss=my_loss,                    # (model, batch, cfg, iters) -> (scalar loss, {name: float})
        eval_step=my_eval_step,          # (model, batch, cfg, iters) -> {name: Tensor (B, ...)}
        inner_steps=my_inner_steps,      # (cfg, step or None) -> inner steps of the set predictor
    )

Contracts:
    * ``inner_steps(cfg, step)`` is the schedule of the inner optimisation's steps (DSPN/iDSPN
      ``iters``): at training step ``step`` (0-based), and at evaluation for ``step=None``. The
      engine passes its value to ``loss`` and ``eval_step`` as ``iters``; models without an inner
      loop ignore it.
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

from collections.abc import Callable, Sized
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from torch import Tensor, nn
from torch.utils.data import Dataset

from idspn_experiments.engine.config import ExperimentConfig

__all__ = ["DataSplits", "Experiment", "ModelEntry", "mean_summary", "model_iters"]

C = TypeVar("C", bound=ExperimentConfig)
Batch = Any  # whatever the collate function returns: usually a dict of tensors


@dataclass
class DataSplits:
    """The data of one run. ``val`` selects the model; ``test`` scores the selected model."""

    train: Dataset  # training examples, indexed 0..len-1
    val: Dataset | None = None  # validation split; None: no validation (the last model is reported)
    test: Dataset | None = None  # test split; None: report validation metrics only
    collate: Callable[[list[Any]], Batch] | None = None  # batch builder; None: torch's default_collate

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            split = getattr(self, name)
            if (split is not None or name == "train") and not isinstance(split, Sized):
                raise ValueError(
                    f"DataSplits.{name} must be a map-style dataset with a length (the engine samples its "
                    f"indices), got {type(split).__name__}"
                )


@dataclass(frozen=True)
class ModelEntry:
    """One model of an experiment's registry (the rows of its paper tables)."""

    label: str  # printed name: the paper's row label
    build: Callable[[Any], nn.Module]  # cfg -> a freshly initialised model (on CPU)
    inner_loop: bool = False  # optimises its output set (DSPN, iDSPN): forward takes iters=
    pairwise: str = "huber"  # pairwise loss of its Hungarian loss: "mse", "huber" or "cross_entropy"
    set_equivariant: bool | None = None  # Table 2's columns; None where the paper states nothing
    multiset_equivariant: bool | None = None
    overrides: tuple[str, ...] = ()  # config overrides that select it, for variants of one model class


def mean_summary(outputs: dict[str, Tensor], cfg: ExperimentConfig) -> dict[str, float]:
    """Default ``summarize``: the mean over all examples of each per-example tensor."""
    return {name: float(values.double().mean()) for name, values in outputs.items()}


def model_iters(cfg: Any, step: int | None) -> int:
    """Default ``inner_steps``: ``cfg.model.iters`` at every step and at evaluation."""
    return int(cfg.model.iters)


@dataclass(frozen=True)
class Experiment(Generic[C]):
    """A registered experiment: config type plus the data, model, loss and metric functions."""

    name: str  # registry key; presets name it in their "experiment" field
    config_type: type[C]  # the experiment's config dataclass
    build_data: Callable[[C, bool], DataSplits]  # (cfg, progress) -> the datasets of a run, from cfg and cfg.seed
    build_model: Callable[[C], nn.Module]  # a freshly initialised model (on CPU)
    loss: Callable[[nn.Module, Batch, C, int], tuple[Tensor, dict[str, float]]]  # training loss and logs
    eval_step: Callable[[nn.Module, Batch, C, int], dict[str, Tensor]]  # per-example outputs of one batch
    summarize: Callable[[dict[str, Tensor], C], dict[str, float]] = mean_summary  # outputs -> metrics
    inner_steps: Callable[[C, int | None], int] = model_iters  # the inner-step schedule (step None: evaluation)
    # (model, data, cfg) -> a matplotlib Figure of predictions on a few validation examples, drawn into
    # TensorBoard at each validation when train.tensorboard is on; None: no picture
    figure: Callable[[nn.Module, DataSplits, C], Any] | None = None
    description: str = ""  # one line for `idspn list`
    # names of the validation metrics ``summarize`` returns, so that a misspelled train.select_metric
    # is refused before training (when there is a validation split to select on); empty: unknown,
    # checked at the first validation
    metrics: tuple[str, ...] = ()
