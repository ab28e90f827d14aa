"""Work split over torch's intra-op threads by rows (NumPy) or by examples (whole inner loops).

The inner loop's sorts (FSPool's ranks, the simplex projection's threshold) run in NumPy, which
releases the GIL while it sorts and computes, so splitting the rows over a few Python threads uses
the cores that torch would use (``torch.get_num_threads()``) for its own kernels.

The pool's threads keep one torch thread each, so the decoder's no-grad inner loop can go one step
further on CPU: each thread runs the whole loop for its share of the batch. Every kernel then runs
side by side with the other threads' instead of splitting itself over the cores (and, we think,
the NumPy sorts no longer compete with torch's OpenMP workers, which spin for a while after each
parallel kernel: a reading of the speed-up, not something the benchmark measures).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

__all__ = ["row_spans", "run_spans", "split_is_safe"]

_MIN_CHUNK = 1 << 15  # elements per thread below which splitting does not pay
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()  # .pool_thread: True in the pool's own threads
_NEW_WORKERS = threading.Event()  # a pool thread started and changed torch's default thread count


def row_spans(rows: int, elements: int) -> list[slice]:
    """``range(rows)`` in one span per torch thread, as many as ``elements`` of work warrant."""
    threads = min(torch.get_num_threads(), elements // _MIN_CHUNK, rows)
    if threads <= 1:
        return [slice(0, rows)]
    return [slice(rows * k // threads, rows * (k + 1) // threads) for k in range(threads)]


def _start_worker() -> None:
    """A pool thread keeps one torch thread for life: its work never needs more.

    Reading the count first fixes this thread's own setting before ``set_num_threads`` writes it
    (torch would otherwise set it from the process default at the thread's first kernel).
    ``set_num_threads`` also writes that default for threads not started yet; ``_map`` puts it back.
    """
    torch.get_num_threads()
    torch.set_num_threads(1)
    _LOCAL.pool_thread = True
    _NEW_WORKERS.set()


def _map(work: Callable[[slice], None], spans: list[slice]) -> None:
    global _POOL, _POOL_SIZE
    threads = torch.get_num_threads()
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < len(spans):
            # Not shut down: another thread may still be mapping on the old pool; its idle workers
            # exit once it is garbage-collected.
            _POOL = ThreadPoolExecutor(len(spans), thread_name_prefix="idspn-rows", initializer=_start_worker)
            _POOL_SIZE = len(spans)
        pool = _POOL
    try:
        list(pool.map(work, spans))
    finally:
        if _NEW_WORKERS.is_set():
            _NEW_WORKERS.clear()
            torch.set_num_threads(threads)  # the caller's count: its own, and again the default


def run_spans(work: Callable[[slice], None], spans: list[slice]) -> None:
    """Run ``work`` on every span, on the pool's threads (one torch thread each) when there are several.

    The pool's threads run in the caller's grad and inference modes (torch keeps them per thread);
    for torch work, call it only where ``split_is_safe()``. ``work`` must be safe to run
    concurrently: read shared modules, write only its own results. In one of the pool's own threads
    the spans run one after the other: a pool thread never waits for its own pool.
    """
    if len(spans) == 1 or getattr(_LOCAL, "pool_thread", False):
        for span in spans:
            work(span)
        return
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def in_callers_modes(span: slice) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            work(span)

    _map(in_callers_modes, spans)


def split_is_safe() -> bool:
    """Whether torch work may move to other threads unchanged: False while per-thread torch state
    that those threads would not share is on (autocast, torch function or dispatch modes,
    forward-mode AD, the autograd profiler)."""
    modes = getattr(torch._C, "_len_torch_function_stack", lambda: 0)() + getattr(
        torch._C, "_len_torch_dispatch_stack", lambda: 0)()
    forward_ad = getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0
    return not (modes or forward_ad or torch.is_autocast_enabled("cpu") or torch.autograd._profiler_enabled())
