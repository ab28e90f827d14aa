"""The one training loop shared by every experiment.

``fit`` trains an :class:`~idspn_experiments.engine.spec.Experiment` for ``cfg.train.steps`` optimiser
steps, validates every ``cfg.train.eval_every`` steps, keeps the best model by
``cfg.train.select_metric``, and finally scores that model on the test split. Files in the run
folder (written by rank 0 only)::

    config.json      the full config of the run
    metrics.jsonl    one JSON record per line: {"step", "split": "train"|"val"|"test", metric: value}
    metrics.csv      the same numbers in long format: step,split,name,value
    last.pt          resumable state: model, optimiser, RNG states of every rank, step, best so far
    best.pt          the selected model (weights, config, step, validation metrics)
    result.json      the final record: selected step, validation and test metrics, timings

Determinism: data come from ``build_data(cfg)`` (generated from ``cfg.seed``), the model is
initialised from a seed stream derived from ``cfg.seed``, the batch of step ``k`` is a pure
function of ``(cfg.seed, k)``, and the remaining randomness (augmentation, random initial sets)
comes from a per-rank training stream whose state is checkpointed. Validation runs with its own
fixed seed and restores the training stream afterwards, so a resumed run (``resume=True``) ends
with exactly the result of an uninterrupted one, and ``idspn eval`` reproduces reported numbers.

Data parallelism: under ``torchrun`` each process takes an equal slice of every global batch and
the model is wrapped in DistributedDataParallel; validation shards the split over processes and
gathers the per-example outputs before summarising. Experiment code is unchanged.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate
from tqdm import tqdm

from idspn_experiments.engine.allocator import keep_freed_memory
from idspn_experiments.engine.board import BoardLog
from idspn_experiments.engine.checkpoint import (
    CorruptCheckpoint,
    capture_rng_state,
    existing_checkpoints,
    load_checkpoint,
    mixed_seed,
    previous_checkpoint,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
)
from idspn_experiments.engine.config import ExperimentConfig, check_config, config_diff, config_to_dict
from idspn_experiments.engine.distributed import DistContext, init_distributed
from idspn_experiments.engine.io import (
    atomic_write_json,
    atomic_write_text,
    dumps_json,
    exclusive_lock,
    loads_json,
    remove_temporaries,
)
from idspn_experiments.engine.spec import Batch, DataSplits, Experiment

__all__ = [
    "RunResult",
    "StepBatchSampler",
    "adam",
    "build_optimizer",
    "learning_rate",
    "train_step",
    "evaluate",
    "fit",
    "load_run_result",
    "hold_run_folder",
    "RunInUse",
]

# Purposes mixed into the seed, so the streams are independent of each other.
_DATA_STREAM, _MODEL_STREAM, _TRAIN_STREAM, _EVAL_STREAM, _ORDER_STREAM = 1, 2, 3, 4, 5
_CHECKPOINT_FORMAT = 1


def _generator(*seed: int) -> torch.Generator:
    """A private CPU generator seeded from a tuple of integers (independent streams per tuple)."""
    return torch.Generator().manual_seed(mixed_seed(*seed))


# ---------------------------------------------------------------------------------------------
# Data order
# ---------------------------------------------------------------------------------------------


class StepBatchSampler(Sampler[list[int]]):
    """Index lists for training steps ``start..stop-1``; the batch of a step depends only on the seed.

    The examples are visited in epochs, each a fresh permutation seeded by ``(seed, epoch)``;
    consecutive steps take consecutive ``batch_size`` slices of the concatenated permutations
    (a batch may straddle two epochs). Under data parallelism rank ``r`` of ``world_size`` takes
    positions ``r, r + world_size, ...`` of each global batch.
    """

    def __init__(
        self, num_examples: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if num_examples <= 0:
            raise ValueError(f"num_examples must be positive, got {num_examples}")
        if batch_size <= 0 or batch_size % world_size:
            raise ValueError(f"batch_size must be a positive multiple of world_size={world_size}, got {batch_size}")
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = _generator(self.seed, _ORDER_STREAM, epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.num_examples, generator=generator)
        return self._perm

    def global_batch(self, step: int) -> list[int]:
        """All indices of the global batch of (0-based) step ``step``."""
        out: list[int] = []
        position = step * self.batch_size
        while len(out) < self.batch_size:
            epoch, offset = divmod(position, self.num_examples)
            take = min(self.batch_size - len(out), self.num_examples - offset)
            out.extend(self._permutation(epoch)[offset : offset + take].tolist())
            position += take
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.global_batch(step)[self.rank :: self.world_size]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    """Move every tensor of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        moved = [_to_device(v, device) for v in batch]
        if isinstance(batch, tuple):  # a named tuple (default_collate keeps them) takes its fields as arguments
            return type(batch)(*moved) if hasattr(batch, "_fields") else tuple(moved)
        return moved
    return batch


# ---------------------------------------------------------------------------------------------
# Optimisation
# ---------------------------------------------------------------------------------------------


FUSED_ADAM_DEVICES = ("cpu", "cuda")  # where torch's fused Adam kernel runs


def adam(params: Iterable[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with learning rate ``lr``: torch's fused kernel (one pass over all parameters per step,
    the same update) where every parameter is on a device that has it, the per-tensor loop elsewhere."""
    params = list(params)
    fused = bool(params) and all(p.device.type in FUSED_ADAM_DEVICES and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def build_optimizer(model: nn.Module, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    """Adam over all parameters with ``cfg.train.lr`` (the optimiser of every experiment in the paper)."""
    return adam(model.parameters(), cfg.train.lr)


def learning_rate(step: int, cfg: ExperimentConfig) -> float:
    """Learning rate of (0-based) step ``step``: linear warm-up, then x ``lr_gamma`` at each milestone."""
    t = cfg.train
    lr = t.lr * t.lr_gamma ** sum(step >= m for m in t.lr_milestones)
    if t.warmup_steps > 0 and step < t.warmup_steps:
        lr *= (step + 1) / t.warmup_steps
    return lr


def train_step(
    experiment: Experiment[Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    cfg: ExperimentConfig,
    iters: int,
) -> dict[str, float]:
    """One optimiser step on one (per-process) batch, with ``iters`` inner steps.

    Returns:
        ``{"loss": float, **logs}`` as returned by the experiment's loss (logs made floats).
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss, logs = experiment.loss(model, batch, cfg, iters)
    loss.backward()
    out = {"loss": float(loss.detach())}
    if cfg.train.grad_clip is not None:
        out["grad_norm"] = float(nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip))
    optimizer.step()
    out.update({k: float(v) for k, v in logs.items()})
    return out


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _draw(experiment: Experiment[Any], model: nn.Module, data: DataSplits, cfg: ExperimentConfig) -> Any:
    """``experiment.figure`` of the model, leaving the training RNG stream and mode as they were."""
    assert experiment.figure is not None
    was_training, rng = model.training, capture_rng_state()
    try:
        with torch.no_grad():
            return experiment.figure(model, data, cfg)
    finally:
        restore_rng_state(rng)
        model.train(was_training)


def evaluate(
    experiment: Experiment[Any],
    model: nn.Module,
    dataset: Dataset,
    cfg: ExperimentConfig,
    ctx: DistContext | None = None,
    collate: Any = None,
    desc: str = "eval",
    progress: bool = False,
) -> dict[str, float]:
    """Metrics of ``model`` on a whole split.

    Each process scores examples ``rank, rank + world_size, ...``; the per-example outputs of
    ``experiment.eval_step`` are gathered from all processes and summarised with
    ``experiment.summarize``. The evaluation draws from its own stream seeded by ``cfg.seed`` and
    leaves the caller's RNG states untouched.

    Args:
        model: the unwrapped model (not DistributedDataParallel).
        dataset: the split to score.
        ctx: the process context; None means single process on the model's device.

    Returns:
        The summary dict (same on every process).
    """
    if ctx is None:
        device = next(model.parameters()).device
        ctx = DistContext(rank=0, world_size=1, device=device)
    was_training = model.training
    model.eval()
    rng = capture_rng_state()
    seed_everything(cfg.seed, _EVAL_STREAM, ctx.rank)
    shard = Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))  # type: ignore[arg-type]  # Sized: DataSplits
    loader = DataLoader(
        shard,
        batch_size=cfg.train.eval_batch_size,
        shuffle=False,
        num_workers=cfg.train.num_workers,
        collate_fn=collate or default_collate,
        generator=_generator(cfg.seed, _EVAL_STREAM, ctx.rank),
    )
    parts: dict[str, list[torch.Tensor]] = {}
    iters = experiment.inner_steps(cfg, None)
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc=desc, leave=False, disable=not (progress and ctx.is_main)):
                out = experiment.eval_step(model, _to_device(batch, ctx.device), cfg, iters)
                for name, value in out.items():
                    parts.setdefault(name, []).append(value.detach().cpu())
    finally:
        restore_rng_state(rng)
        model.train(was_training)
    local = {name: torch.cat(values) for name, values in parts.items()}
    gathered = ctx.gather(local)
    merged = {name: torch.cat([g[name] for g in gathered]) for name in local}
    return experiment.summarize(merged, cfg)


# ---------------------------------------------------------------------------------------------
# Logs and results
# ---------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """The final record of a run (also written to ``result.json``)."""

    experiment: str  # registered experiment name
    config: dict[str, Any]  # the full config
    steps: int  # optimiser steps trained
    best_step: int  # step of the reported (selected) model
    val: dict[str, float]  # validation metrics of the reported model ({} without a val split)
    test: dict[str, float] | None  # test metrics of the reported model (None without a test split)
    wall_time_s: float  # elapsed time of the whole run, summed over resumed segments
    train_time_s: float  # time spent in training steps
    step_time_s: float  # train_time_s / steps: seconds per training step
    world_size: int  # number of data-parallel processes
    device: str  # device type the run trained on
    extra: dict[str, Any] = field(default_factory=dict)  # free-form additions

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_run_result(run_dir: str | Path) -> RunResult | None:
    """The result of a finished run, or None if ``run_dir`` holds no ``result.json``.

    Raises:
        ValueError: the file is not valid JSON or lacks fields of a ``RunResult`` (naming it, and
            what to do: remove it to train the run again).
    """
    path = Path(run_dir) / "result.json"
    if not path.exists():
        return None
    try:
        data = loads_json(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError) as err:
        raise ValueError(
            f"run result {str(path)!r} is not valid JSON ({err}); remove it to train the run again"
        ) from None
    expected = {f.name for f in dataclasses.fields(RunResult)}
    required = {
        f.name
        for f in dataclasses.fields(RunResult)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    if not isinstance(data, dict) or not required <= set(data) or not set(data) <= expected:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"run result {str(path)!r} does not hold a run result (fields {found}; expected "
            f"{sorted(required)}); remove it to train the run again"
        )
    return RunResult(**data)


class RunInUse(ValueError):
    """Another process holds the run folder (it is training that run)."""


@contextmanager
def hold_run_folder(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``run_dir/.lock`` for the ``with`` block, and clear the temporary files a killed writer left.

    What is decided about a run (is it finished? train it) must be decided under this lock: a check
    made before it can be stale by the time the lock is taken.

    Raises:
        RunInUse: another process holds the folder.
    """
    run_dir = Path(run_dir)
    with exclusive_lock(run_dir / ".lock", wait=False) as held:
        if not held:
            raise RunInUse(f"run folder {run_dir} is in use by another process (it holds {run_dir / '.lock'})")
        remove_temporaries(run_dir)
        yield run_dir


def _read_records(path: Path, notify: Callable[[str], None]) -> list[dict[str, Any]]:
    """The records of a metrics log; a torn last line (a kill mid-append) is dropped with a notice."""
    records = []
    lines = path.read_text().splitlines() if path.exists() else []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = loads_json(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                notify(f"{path}: dropped a half-written last line (an interrupted write): {line[:60]!r}")
                continue
            raise ValueError(f"metrics log {str(path)!r}, line {i + 1}, is not a JSON record: {line[:60]!r}") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int) or "split" not in record:
            raise ValueError(f"metrics log {str(path)!r}, line {i + 1}, is not a metrics record: {line[:60]!r}")
        records.append(record)
    return records


class _MetricLog:
    """Appends metric records to ``metrics.jsonl`` and ``metrics.csv`` (rank 0 only).

    Every record is one line, written with a single ``write`` and flushed, so a killed run leaves
    at most a torn last line, which ``reset`` drops on resume.
    """

    def __init__(self, run_dir: Path, enabled: bool, notify: Callable[[str], None]) -> None:
        self.jsonl, self.csv, self.enabled = run_dir / "metrics.jsonl", run_dir / "metrics.csv", enabled
        self.notify = notify

    def reset(self, keep_until: int | None) -> None:
        """Start fresh (None) or keep only records up to step ``keep_until`` (resume)."""
        if not self.enabled:
            return
        records = []
        if keep_until is not None:
            # A test record is written once, after the last step: one kept from an earlier finish
            # (killed before its result.json, or resumed after it) would be logged twice.
            kept = _read_records(self.jsonl, self.notify)
            records = [r for r in kept if r["step"] <= keep_until and r["split"] != "test"]
            logged = max((r["step"] for r in records if r["split"] == "train"), default=0)
            if logged < keep_until:
                self.notify(
                    f"{self.jsonl} holds no training records of steps {logged + 1}-{keep_until} (deleted or "
                    f"lost); the run resumes from its checkpoint at step {keep_until} without them"
                )
        atomic_write_text(self.jsonl, "".join(dumps_json(r) + "\n" for r in records))
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["step", "split", "name", "value"])
        for record in records:
            writer.writerows(self._rows(record))
        atomic_write_text(self.csv, buffer.getvalue())

    @staticmethod
    def _rows(record: dict[str, Any]) -> list[list[Any]]:
        return [[record["step"], record["split"], k, v] for k, v in record.items() if k not in ("step", "split")]

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **values}
        with self.jsonl.open("a") as f:
            f.write(dumps_json(record) + "\n")
        buffer = io.StringIO()
        csv.writer(buffer).writerows(self._rows(record))
        with self.csv.open("a", newline="") as f:
            f.write(buffer.getvalue())


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _stderr(message: str) -> None:
    print(f"idspn: {message}", file=sys.stderr, flush=True)


_RESUMABLE_KEYS = ("config", "step", "model", "optimizer", "rng", "best", "wall_time_s", "train_time_s")


def _check_resumable(path: Path, ckpt: dict[str, Any]) -> None:
    """Raise ``CorruptCheckpoint`` unless ``ckpt`` is a training state that ``_fit`` wrote (e.g. not a
    ``best.pt`` copied over ``last.pt``, nor a checkpoint of another format)."""
    if ckpt.get("format") != _CHECKPOINT_FORMAT:
        raise CorruptCheckpoint(
            f"{path} is not a resumable checkpoint of format {_CHECKPOINT_FORMAT} (its format: {ckpt.get('format')!r})"
        )
    missing = [key for key in _RESUMABLE_KEYS if key not in ckpt]
    if missing:
        raise CorruptCheckpoint(f"{path} is not a resumable checkpoint: it lacks {', '.join(missing)}")


def _resumable_checkpoint(last_path: Path, notify: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest readable of ``last.pt`` and the ``last.pt.prev`` it replaced, or None if neither exists.

    Raises:
        ValueError: both exist but neither can be read (says which files to remove).
    """
    candidates = existing_checkpoints(last_path)
    problems = []
    for path in candidates:
        try:
            ckpt = load_checkpoint(path)  # CPU: load_state_dict copies to the device
            _check_resumable(path, ckpt)
        except CorruptCheckpoint as err:
            problems.append(str(err))
            continue
        if problems:
            notify(f"{problems[0]}; resuming from the previous checkpoint {path} (step {ckpt.get('step')})")
        return ckpt
    if problems:
        names = " and ".join(str(path) for path in candidates)
        raise ValueError(f"cannot resume: {'; '.join(problems)}. Remove {names} to train the run from the start")
    return None


def fit(
    experiment: Experiment[Any],
    cfg: ExperimentConfig,
    run_dir: str | Path,
    resume: bool | Literal["auto"] = False,
    progress: bool = True,
    stop_at_step: int | None = None,
    notify: Callable[[str], None] = _stderr,
    held: bool = False,
    overwrite: bool = True,
) -> RunResult | None:
    """Train, validate, select and test one run of ``experiment``.

    One process writes a run folder at a time: it holds the folder (``hold_run_folder``) while it
    trains, so a second one is refused with ``RunInUse``.

    Args:
        experiment: the registered experiment.
        cfg: its config (``cfg.experiment`` must equal ``experiment.name``).
        run_dir: folder for logs, checkpoints and ``result.json``.
        resume: continue from ``run_dir/last.pt`` if it exists (its config must equal ``cfg``); an
            unreadable ``last.pt`` falls back to the checkpoint it replaced, ``last.pt.prev``.
            Without one, True says so and starts from step 0; ``"auto"`` starts silently (a run
            that may or may not have begun: the runner, the demo, sweeps). False starts from
            scratch and overwrites earlier logs (unless ``overwrite`` is False).
        progress: show tqdm progress bars (rank 0).
        stop_at_step: stop (without saving anything extra) once this many steps are done and
            return None: simulates a killed run for resume tests.
        notify: where notices go (a resume without checkpoint, a torn log line, a fallback).
        held: the caller holds the folder already (inside its own ``hold_run_folder`` block).
        overwrite: with ``resume=False``, whether a folder that holds a run (its ``last.pt`` or
            ``last.pt.prev``) is trained over from step 0; False refuses with ``ValueError``
            (``idspn train`` without ``--resume``), checked first, so that a user learns it even
            while another process trains there, and again while the folder is held. Under
            torchrun every process checks its own view of the folder; only rank 0 holds it.

    Returns:
        The run's result, identical on every process; None when stopped by ``stop_at_step``.

    Raises:
        ValueError: on a config of another experiment or out of range, a bad ``IDSPN_MALLOC``
            (``engine.allocator``), a batch size not divisible
            by the number of processes, or a checkpoint that cannot be resumed (another config or
            world size, or unreadable together with its predecessor), or a run to overwrite
            without ``overwrite``.
        RunInUse: another process is training in ``run_dir``.
    """
    if cfg.experiment != experiment.name:
        raise ValueError(f"cfg.experiment is {cfg.experiment!r} but the experiment is {experiment.name!r}")
    if resume not in (False, True, "auto"):
        raise ValueError(f"resume must be False, True or 'auto', got {resume!r}")
    check_config(cfg)
    keep_freed_memory()  # no page faults for the temporaries every step frees and allocates again
    run_dir = Path(run_dir)
    ctx = init_distributed(cfg.device)
    _refuse_an_earlier_run(run_dir, resume, overwrite)  # said first, also while another process trains there
    if held or not ctx.is_main:  # rank 0 holds the folder for every process of a torchrun job
        return _fit(experiment, cfg, run_dir, ctx, resume, progress, stop_at_step, notify)
    with hold_run_folder(run_dir):
        _refuse_an_earlier_run(run_dir, resume, overwrite)  # again under the lock: a run begun meanwhile
        return _fit(experiment, cfg, run_dir, ctx, resume, progress, stop_at_step, notify)


def _refuse_an_earlier_run(run_dir: Path, resume: bool | Literal["auto"], overwrite: bool) -> None:
    if resume or overwrite:
        return  # nothing to refuse: no look at the folder
    checkpoints = [path.name for path in existing_checkpoints(run_dir / "last.pt")]
    results = [name for name in ("result.json", "best.pt") if (run_dir / name).exists()]
    if checkpoints:
        raise ValueError(
            f"{run_dir} already holds a run ({', '.join(checkpoints)}): pass resume=True (idspn train "
            "--resume) to continue it, or choose another run_dir (--out)"
        )
    if results:  # a finished run whose checkpoint was deleted: nothing to resume, its results to keep
        raise ValueError(
            f"{run_dir} already holds a run ({', '.join(results)}; no checkpoint to resume from): choose another "
            "run_dir (--out), or remove its files to train there from the start"
        )


def _fit(
    experiment: Experiment[Any],
    cfg: ExperimentConfig,
    run_dir: Path,
    ctx: DistContext,
    resume: bool | Literal["auto"],
    progress: bool,
    stop_at_step: int | None,
    notify: Callable[[str], None],
) -> RunResult | None:
    started = time.perf_counter()
    t = cfg.train
    if t.batch_size % ctx.world_size:
        raise ValueError(
            f"train.batch_size={t.batch_size} must be divisible by the number of processes {ctx.world_size}"
        )
    cfg_dict = config_to_dict(cfg)
    say = notify if ctx.is_main else lambda message: None  # one notice per run, not per process
    log = _MetricLog(run_dir, enabled=ctx.is_main, notify=say)

    seed_everything(cfg.seed, _DATA_STREAM)
    data: DataSplits = experiment.build_data(cfg, progress and ctx.is_main)
    select = t.select_metric if data.val is not None else None  # without a validation split: the last model
    if select is not None and experiment.metrics and select not in experiment.metrics:
        raise ValueError(
            f"config key 'train.select_metric': {select!r} is not among the validation metrics of "
            f"{experiment.name!r}: {sorted(experiment.metrics)}"
        )
    for name in ("val", "test"):
        split = getattr(data, name)
        if split is not None and len(split) < ctx.world_size:
            raise ValueError(
                f"the {name} split has {len(split)} examples, fewer than the {ctx.world_size} processes "
                "that evaluate it (each scores its own shard): use fewer processes or a larger split"
            )
    seed_everything(cfg.seed, _MODEL_STREAM)
    model = experiment.build_model(cfg).to(ctx.device)
    optimizer = build_optimizer(model, cfg)
    seed_everything(cfg.seed, _TRAIN_STREAM, ctx.rank)

    step, best_step, best_value, best_val = 0, None, None, {}
    last_val: dict[str, float] = {}  # the latest validation, reported if none was ever better (all NaN)
    wall_before, train_time = 0.0, 0.0
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    ckpt = _resumable_checkpoint(last_path, say) if resume else None
    if resume is True and ckpt is None:
        say(f"no checkpoint in {run_dir} to resume from: training from step 0")
    if ckpt is not None:
        diff = config_diff(ckpt.get("config", {}), cfg_dict)
        if diff:
            raise ValueError(f"cannot resume {last_path}: its config differs: {'; '.join(diff)}")
        if len(ckpt["rng"]) != ctx.world_size:
            raise ValueError(
                f"cannot resume {last_path}: saved with {len(ckpt['rng'])} processes, now {ctx.world_size}"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        best_step, best_value, best_val = ckpt["best"]["step"], ckpt["best"]["value"], ckpt["best"]["val"]
        last_val = ckpt["best"].get("last_val", {})
        wall_before, train_time = ckpt["wall_time_s"], ckpt["train_time_s"]
        restore_rng_state(ckpt["rng"][ctx.rank])
        log.reset(keep_until=step)
    else:
        log.reset(keep_until=None)
        if ctx.is_main:  # an earlier run's result and checkpoints would describe another run
            for stale in (run_dir / "result.json", last_path, previous_checkpoint(last_path), best_path):
                stale.unlink(missing_ok=True)
    if ctx.is_main:
        atomic_write_json(run_dir / "config.json", cfg_dict)
    with (
        closing(BoardLog(run_dir, enabled=t.tensorboard and ctx.is_main, start_step=step)) as board,
        tqdm(
            total=t.steps, initial=step, desc=f"{experiment.name} train", disable=not (progress and ctx.is_main)
        ) as bar,
    ):
        train_model: nn.Module = model
        if ctx.distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            train_model = DistributedDataParallel(model, device_ids=device_ids)

        def wall_time() -> float:
            return wall_before + time.perf_counter() - started

        def save_last() -> None:
            # Collective: every rank sends its RNG state and a parameter checksum to every rank.
            checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
            gathered = ctx.gather((capture_rng_state(), checksum))
            rng_states = [state for state, _ in gathered]
            if len({c for _, c in gathered}) > 1:
                raise RuntimeError(
                    f"data-parallel replicas diverged at step {step}: parameter sums {[c for _, c in gathered]}"
                )
            if ctx.is_main:
                save_checkpoint(
                    last_path,
                    {
                        "format": _CHECKPOINT_FORMAT,
                        "experiment": experiment.name,
                        "config": cfg_dict,
                        "step": step,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": rng_states,
                        "best": {"step": best_step, "value": best_value, "val": best_val, "last_val": last_val},
                        "wall_time_s": wall_time(),
                        "train_time_s": train_time,
                    },
                    keep_previous=True,
                )

        def save_best(val: dict[str, float]) -> None:
            if ctx.is_main:
                save_checkpoint(
                    best_path,
                    {
                        "format": _CHECKPOINT_FORMAT,
                        "experiment": experiment.name,
                        "config": cfg_dict,
                        "step": step,
                        "model": model.state_dict(),
                        "val": val,
                    },
                )

        size = len(data.train)  # type: ignore[arg-type]  # DataSplits checks that every split is Sized
        sampler = StepBatchSampler(size, t.batch_size, cfg.seed, step, t.steps, ctx.rank, ctx.world_size)
        loader = DataLoader(
            data.train,
            batch_sampler=sampler,
            num_workers=t.num_workers,
            collate_fn=data.collate or default_collate,
            generator=_generator(cfg.seed, _ORDER_STREAM, step),  # keeps the loader off the global RNG
        )
        for batch in loader:
            lr = learning_rate(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            iters = experiment.inner_steps(cfg, step)
            tick = time.perf_counter()
            with board.inner_diagnostics(model, step + 1):
                logs = train_step(experiment, train_model, optimizer, _to_device(batch, ctx.device), cfg, iters)
            elapsed = time.perf_counter() - tick
            train_time += elapsed
            step += 1
            log.write(step, "train", {**logs, "lr": lr, "time_s": elapsed})
            board.scalars("train", step, {**logs, "lr": lr})
            bar.update(1)
            postfix = {"loss": f"{logs['loss']:.4f}"}

            if data.val is not None and (step % t.eval_every == 0 or step == t.steps):
                val = evaluate(experiment, model, data.val, cfg, ctx, data.collate, desc="val", progress=progress)
                log.write(step, "val", val)
                board.scalars("val", step, val)
                if board.enabled and experiment.figure is not None:
                    board.figure("val/predictions", step, _draw(experiment, model, data, cfg))
                if select is not None:
                    if select not in val:
                        raise ValueError(
                            f"config key 'train.select_metric': {select!r} is not among the validation "
                            f"metrics {sorted(val)}"
                        )
                    if _is_better(val[select], best_value, t.select_mode):
                        best_step, best_value, best_val = step, val[select], val
                        save_best(val)
                else:
                    best_step, best_val = step, val
                last_val = val
                postfix[f"val_{select or 'metric'}"] = f"{val.get(select or '', float('nan')):.4f}"
            bar.set_postfix(postfix, refresh=False)

            if step % t.checkpoint_every == 0 or step == t.steps:
                save_last()
            if stop_at_step is not None and step >= stop_at_step and step < t.steps:
                ctx.barrier()
                return None

        # The reported model: the best by validation metric, or the last one.
        if select is None or best_step is None:
            best_step = step
            best_val = best_val or last_val
            save_best(best_val)
        ctx.barrier()
        if select is not None:
            model.load_state_dict(load_checkpoint(best_path)["model"])
        test = None
        if data.test is not None:
            test = evaluate(experiment, model, data.test, cfg, ctx, data.collate, desc="test", progress=progress)
            log.write(step, "test", test)
            board.scalars("test", step, test)
    result = RunResult(
        experiment=experiment.name,
        config=cfg_dict,
        steps=step,
        best_step=best_step,
        val=best_val,
        test=test,
        wall_time_s=wall_time(),
        train_time_s=train_time,
        step_time_s=train_time / max(step, 1),
        world_size=ctx.world_size,
        device=ctx.device.type,
    )
    if ctx.is_main:
        atomic_write_json(run_dir / "result.json", result.to_dict())
        previous_checkpoint(last_path).unlink(missing_ok=True)  # a finished run needs no fallback
    ctx.barrier()
    return result
