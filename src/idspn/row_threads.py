"""Work split over torch's intra-op threads by rows (NumPy) or by examples (whole inner loops).

The inner loop's sorts (FSPool's ranks, the simplex projection's threshold) run in NumPy, which
releases the GIL while it sorts and computes, so splitting the rows over a few Python threads uses
the cores that torch would use (``torch.get_num_threads()``) for its own kernels.

The decoder's no-grad inner loop goes one step further on CPU (``run_spans_one_torch_thread``): each
thread runs the whole loop for its share of the batch with one torch thread. Every kernel then runs
side by side with the other threads' instead of splitting itself over the cores, and the NumPy
sorts no longer compete with torch's OpenMP workers, which spin for a while after each parallel
kernel before they sleep.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

__all__ = ["row_spans", "run_spans", "run_spans_one_torch_thread"]

_MIN_CHUNK = 1 << 15  # elements per thread below which splitting does not pay
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def row_spans(rows: int, elements: int) -> list[slice]:
    """``range(rows)`` in one span per torch thread, as many as ``elements`` of work warrant."""
    threads = min(torch.get_num_threads(), elements // _MIN_CHUNK, rows)
    if threads <= 1:
        return [slice(0, rows)]
    return [slice(rows * k // threads, rows * (k + 1) // threads) for k in range(threads)]


def _pool(size: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < size:
            # Not shut down: another thread may still be mapping on the old pool; its idle workers
            # exit once it is garbage-collected.
            _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=size, thread_name_prefix="idspn-rows"), size
        return _POOL


def run_spans(work: Callable[[slice], None], spans: list[slice]) -> None:
    """Run ``work`` on every span, on a thread pool when there are several."""
    if len(spans) == 1:
        work(spans[0])
        return
    list(_pool(len(spans)).map(work, spans))


def run_spans_one_torch_thread(work: Callable[[slice], None], spans: list[slice]) -> None:
    """Run ``work`` on every span in its own thread, each with one torch thread (several spans).

    The threads run in the caller's grad and inference modes (torch keeps them per thread). ``work``
    must be safe to run concurrently: read shared modules, write only its own span's tensors. Its
    nested ``run_spans`` calls see one torch thread, so they split nothing further.
    """
    if len(spans) == 1:
        work(spans[0])
        return
    threads, grad, inference = torch.get_num_threads(), torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def alone(span: slice) -> None:
        torch.set_num_threads(1)  # this thread's OpenMP and MKL settings (and the default for new threads)
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                work(span)
        finally:
            torch.set_num_threads(threads)

    list(_pool(len(spans)).map(alone, spans))
