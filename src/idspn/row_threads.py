"""Row-wise NumPy work split over torch's intra-op threads.

The inner loop's sorts (FSPool's ranks, the simplex projection's threshold) run in NumPy, which
releases the GIL while it sorts and computes, so splitting the rows over a few Python threads uses
the cores that torch would use (``torch.get_num_threads()``) for its own kernels.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

__all__ = ["row_spans", "run_spans"]

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


def run_spans(work: Callable[[slice], None], spans: list[slice]) -> None:
    """Run ``work`` on every span, on a thread pool when there are several."""
    global _POOL, _POOL_SIZE
    if len(spans) == 1:
        work(spans[0])
        return
    with _POOL_LOCK:
        if _POOL_SIZE < len(spans):
            # Not shut down: another thread may still be mapping on the old pool; its idle workers
            # exit once it is garbage-collected.
            _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=len(spans), thread_name_prefix="idspn-rows"), len(spans)
        pool = _POOL
    list(pool.map(work, spans))
