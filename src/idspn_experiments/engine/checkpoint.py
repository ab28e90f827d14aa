"""Checkpoints and random-number-generator state capture.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(weights_only=True)``: the RNG states of numpy and Python's ``random`` are converted.
They are written atomically (``io.atomic_write``); with ``keep_previous`` the checkpoint they
replace is kept as ``<name>.prev``, so a file damaged later (a full disk, a copy cut short) still
leaves a good one to resume from. A file that does not load is reported as ``CorruptCheckpoint``,
naming it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from idspn_experiments.engine.io import atomic_write

__all__ = [
    "CorruptCheckpoint",
    "save_checkpoint",
    "load_checkpoint",
    "previous_checkpoint",
    "existing_checkpoints",
    "capture_rng_state",
    "restore_rng_state",
    "mixed_seed",
    "seed_everything",
]


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be read back (truncated, empty, or not a checkpoint)."""


def previous_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Where ``save_checkpoint(path, ..., keep_previous=True)`` keeps the checkpoint it replaced."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def existing_checkpoints(path: str | os.PathLike[str]) -> list[Path]:
    """Those of ``path`` and its ``previous_checkpoint`` that exist, newest first."""
    return [p for p in (Path(path), previous_checkpoint(path)) if p.exists()]


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any], keep_previous: bool = False) -> None:
    """Atomically ``torch.save`` a checkpoint dict (keeping the replaced one as ``.prev`` if asked)."""
    path = Path(path)

    def write(f: Any) -> None:
        torch.save(state, f)
        if keep_previous and path.exists():
            os.replace(path, previous_checkpoint(path))  # the new file is complete: move the old aside

    atomic_write(path, write)


_ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of every file torch.save writes (its zip format)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (safe ``weights_only`` loading).

    ``mmap=True`` maps the file instead of reading it: tensors are read only when touched, so
    looking up e.g. the step of a large checkpoint costs little.

    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptCheckpoint: the file is a folder, empty, truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        raise CorruptCheckpoint(f"checkpoint {str(path)!r} is a folder, not a checkpoint file")
    size = path.stat().st_size

    def unreadable(detail: str) -> CorruptCheckpoint:
        return CorruptCheckpoint(
            f"checkpoint {str(path)!r} ({size} bytes) cannot be read: it is empty, truncated or not an idspn "
            f"checkpoint ({detail})"
        )

    try:
        with path.open("rb") as handle:
            magic = handle.read(len(_ZIP_MAGIC))
    except OSError as err:
        raise unreadable(err.strerror or type(err).__name__) from None
    if magic != _ZIP_MAGIC:  # torch.save writes a zip archive; anything else would go to the bare unpickler
        raise unreadable("not a zip archive")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except MemoryError:
        raise
    except Exception as err:  # a damaged archive fails anywhere in the reader or the unpickler, with any type
        detail = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise unreadable(detail) from None
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not an idspn checkpoint")
    return state


def capture_rng_state() -> dict[str, Any]:
    """The state of every RNG the training stream draws from: torch (CPU and CUDA), numpy, random."""
    np_state: tuple[str, np.ndarray, int, int, float] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    npy = state["numpy"]
    np.random.set_state(
        ("MT19937", npy["key"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def mixed_seed(*seed: int) -> int:
    """A 64-bit seed from a tuple of integers (e.g. ``(seed, purpose, rank)``); distinct tuples
    give independent streams (numpy's SeedSequence mixes them)."""
    words = np.random.SeedSequence(list(seed)).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 32 | int(words[1])


def seed_everything(*seed: int) -> None:
    """Seed torch, numpy and random from a tuple of integers (see ``mixed_seed``)."""
    value = mixed_seed(*seed)
    torch.manual_seed(value)
    np.random.seed(value >> 32)
    random.seed(value)
