"""Atomic file writes, checkpoints and random-number-generator state capture.

A file is written to a temporary name in the same folder, flushed to disk and moved over the
final name with ``os.replace`` (atomic on POSIX), so a run killed mid-write leaves either the old
file or the new one, never a truncated one.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
``torch.load(weights_only=True)``: the RNG states of numpy and Python's ``random`` are converted.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "mixed_seed",
    "seed_everything",
]


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], binary: bool = True) -> None:
    """Write ``path`` atomically: ``write(file_object)`` fills a temporary file that replaces it.

    Args:
        path: final file name; its folder is created if missing.
        write: callable receiving an open file object.
        binary: open the temporary file in binary (True) or text mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write a text file."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a checkpoint dict."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (safe ``weights_only`` loading).

    ``mmap=True`` maps the file instead of reading it: tensors are read only when touched, so
    looking up e.g. the step of a large checkpoint costs little.
    """
    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def capture_rng_state() -> dict[str, Any]:
    """The state of every RNG the training stream draws from: torch (CPU and CUDA), numpy, random."""
    np_state = np.random.get_state()
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
