"""Memory of a CPU training process: keep freed blocks instead of handing them back to the system.

glibc's malloc serves a large allocation with a fresh ``mmap`` and unmaps it when it is freed (above
a threshold that adapts to the program, up to 32 MiB), and returns the free top of its heap to the
system beyond a trim threshold. A training step on CPU frees and allocates the same large
temporaries at every inner step, so with those defaults a step may fault their pages in again, each
one zeroed by the kernel (``benchmarks/step_benchmark.py --malloc system`` times steps that way;
docs/benchmarks.md). ``keep_freed_memory`` fixes both thresholds, so that blocks of up to
``MMAP_THRESHOLD`` come from the heap and up to ``TRIM_THRESHOLD`` of free heap stays with the
process: its resident set stays near the peak of a step, as PyTorch's CUDA caching allocator keeps
GPU memory. ``fit`` calls it; ``IDSPN_MALLOC=system`` in the environment leaves malloc as it is.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["ENVIRONMENT", "MMAP_THRESHOLD", "SETTING", "TRIM_THRESHOLD", "keep_freed_memory", "malloc_setting"]

MMAP_THRESHOLD = 32 * 2**20  # the largest threshold glibc adapts to by itself on 64-bit systems
TRIM_THRESHOLD = 2**30
# The same two settings for a process yet to start (glibc reads them from its environment).
ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
SETTING = "IDSPN_MALLOC"  # environment variable: "keep" (the default) or "system"
_SETTINGS = ("keep", "system")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (glibc's malloc.h)
_kept = False


def malloc_setting() -> str:
    """``IDSPN_MALLOC`` from the environment: ``"keep"`` (also when unset) or ``"system"``."""
    value = os.environ.get(SETTING, "keep").strip().lower() or "keep"
    if value not in _SETTINGS:
        raise ValueError(f"{SETTING} must be one of {', '.join(_SETTINGS)}, got {os.environ[SETTING]!r}")
    return value


def keep_freed_memory() -> bool:
    """Fix glibc malloc's mmap and trim thresholds for this process; returns whether they are set.

    Called more than once, it sets them once. Does nothing and returns False with
    ``IDSPN_MALLOC=system``, or where the C library is not glibc (macOS, musl, Windows).
    """
    global _kept
    if malloc_setting() == "system":
        return False
    if _kept:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _kept
