"""TensorBoard logging of a run: ``train.tensorboard=true`` (needs the ``tensorboard`` extra).

The run's JSONL/CSV logs stay the record; with the switch on, rank 0 also writes event files to
``<run>/tensorboard/`` with these tags::

    train/loss, train/lr, train/<log>     every training step (the loss's own logs too)
    inner/<diagnostic>                    every training step, for each IDSPN of the model: the
                                          InnerDiagnostics means (initial_objective,
                                          final_objective, final_grad_norm, distance);
                                          inner/<module name>/<diagnostic> if there are several
    val/<metric>, test/<metric>           at each validation and after the run
    val/predictions                       a picture of predictions, at each validation, for
                                          experiments that draw one (``Experiment.figure``)

A resumed run drops the events logged after its checkpoint's step (``purge_step``), so the curves
hold each step once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from idspn import IDSPN

__all__ = ["BoardLog"]


class BoardLog:
    """Scalars and pictures of one run for TensorBoard; does nothing when not ``enabled``.

    Args:
        run_dir: the run folder; events go to ``run_dir/tensorboard``.
        enabled: write anything at all (``train.tensorboard`` and rank 0).
        start_step: the step the run starts or resumes from.

    Raises:
        ValueError: when enabled without the ``tensorboard`` package installed.
    """

    def __init__(self, run_dir: Path, enabled: bool, start_step: int = 0) -> None:
        self.writer: Any = None
        self._decoders: list[tuple[str, IDSPN]] | None = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch's module imports the tensorboard package
            raise ValueError(
                "config key 'train.tensorboard' is true but the tensorboard package is missing: "
                "pip install 'idspn[tensorboard]'"
            ) from err
        # Events of steps after the checkpoint (logged before a kill) are dropped: TensorBoard purges
        # steps >= purge_step once the first new event arrives.
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def scalars(self, split: str, step: int, values: Mapping[str, float]) -> None:
        """``<split>/<name>`` for every value at ``step``."""
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{split}/{name}", value, step)

    def figure(self, tag: str, step: int, figure: Any) -> None:
        """A matplotlib figure as the picture ``tag`` at ``step`` (the figure is closed)."""
        if self.writer is not None:
            self.writer.add_figure(tag, figure, step, close=True)

    @contextmanager
    def inner_diagnostics(self, model: nn.Module, step: int) -> Iterator[None]:
        """Record the inner loops of ``model``'s decoders during the block; log them at ``step``."""
        if self.writer is not None and self._decoders is None:  # the model's decoders, found once
            self._decoders = [(name, m) for name, m in model.named_modules() if isinstance(m, IDSPN)]
        decoders = self._decoders or []  # none with logging off: nothing to do per step
        for _, decoder in decoders:
            decoder.record_diagnostics, decoder.last_diagnostics = True, None
        try:
            yield
        finally:
            for name, decoder in decoders:
                decoder.record_diagnostics = False
                if decoder.last_diagnostics is not None:
                    split = "inner" if len(decoders) == 1 else f"inner/{name}"
                    self.scalars(split, step, decoder.last_diagnostics.summary())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
