"""Stable descending argsort along the set dimension, fast on CPU.

FSPool sorts every feature across the set at every inner step of the decoder, so sorting is the
largest cost of an iDSPN forward pass outside the matrix products. On CPU, ``torch.sort`` over many
short rows is several times slower than NumPy's SIMD sort of plain integers, so for ``float32`` CPU
tensors we sort 64-bit keys that pack an order-preserving integer image of each value (high 32 bits)
with its position (low 32 bits): sorting the keys alone gives the permutation, exactly. The rows are
read in the tensor's own memory order (no transposing copy when the sorted dim is the innermost in
memory) and split over torch's intra-op threads (NumPy releases the GIL while it works).

FSPool needs the *rank* of every element rather than the permutation. For short sets (at most
``COUNTING_MAX`` elements, e.g. the 8 or 10 of the autoencoding and CLEVR models) ranks are counted
directly, one vectorised comparison per pair of positions, which is several times faster than
sorting millions of rows of 8; longer sets invert the sort's permutation.

The sort must be *stable* (ties broken by position, the same rule in every feature). With an
arbitrary tie-breaking rule per feature, equal elements could be ranked first in one feature and
last in another depending on the input order, and the decoder would no longer be
multiset-equivariant (Definition 2); with one positional rule, permuting equal inputs permutes the
outputs (Appendix A.2). The permutation is piecewise constant in the input, so no gradient flows
through it (Eq. 11): callers gather or scatter with it to stay differentiable. NaN inputs give an
arbitrary order; the decoders check their outputs for non-finite values.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["argsort_descending", "descending_ranks", "COUNTING_MAX", "set_dim_outermost"]

COUNTING_MAX = 16  # longest set whose ranks are counted pairwise rather than sorted
_MIN_CHUNK = 1 << 15  # elements per thread below which splitting the sort does not pay
_MIN_BUCKETED = 32  # row length from which 32-bit bucketed keys beat exact 64-bit keys
_POOL: ThreadPoolExecutor | None = None


def _descending_keys(rows: np.ndarray) -> np.ndarray:
    """int32 keys of a float32 array whose ascending order is the values' descending order."""
    bits = rows.view(np.int32)
    keys = bits >> 31
    keys &= 0x7FFFFFFF
    keys ^= bits  # negative floats: flip the value bits, so integer order = float order
    np.invert(keys, out=keys)  # descending
    return keys


def _packed_argsort_descending(rows: np.ndarray) -> np.ndarray:
    """Stable descending argsort of each row of a C-contiguous ``(R, N)`` float32 array."""
    keys = np.empty(rows.shape, dtype=np.int64)
    halves = keys.view(np.int32).reshape(*rows.shape, 2)  # little-endian: [..., 0] is the low word
    halves[..., 1] = _descending_keys(rows)
    halves[..., 0] = np.arange(rows.shape[-1], dtype=np.int32)
    keys.sort(axis=-1)
    return halves[..., 0].astype(np.int64)


def _bucketed_argsort_descending(rows: np.ndarray) -> np.ndarray:
    """``_packed_argsort_descending`` for long rows, through 32-bit keys (2-4x faster to sort).

    The key keeps the top ``32 - b`` bits of the order-preserving image of each value and the
    position in the low ``b = ceil(log2 N)`` bits, so sorting orders the values by bucket, and
    within a bucket by position. Adjacent elements of one bucket are in order only if their values
    do not increase; the few rows where they do are sorted again with exact 64-bit keys.
    """
    n = rows.shape[-1]
    shift = (n - 1).bit_length()
    keys = _descending_keys(rows)
    keys &= ~np.int32((1 << shift) - 1)
    keys |= np.arange(n, dtype=np.int32)
    keys.sort(axis=-1)
    shared = ((keys[:, 1:] ^ keys[:, :-1]).view(np.uint32) < (1 << shift)).any(-1)  # (R,)
    keys &= (1 << shift) - 1
    perm = keys.astype(np.int64)
    check = np.flatnonzero(shared)
    if check.size:
        values = np.take_along_axis(rows[check], perm[check], axis=-1)
        redo = check[(values[:, 1:] > values[:, :-1]).any(-1)]
        if redo.size:
            perm[redo] = _packed_argsort_descending(rows[redo])
    return perm


def _spans(length: int, elements: int) -> list[slice]:
    """``range(length)`` in one span per torch thread, as many as ``elements`` of work warrant."""
    threads = min(torch.get_num_threads(), elements // _MIN_CHUNK, length)
    if threads <= 1:
        return [slice(0, length)]
    return [slice(length * k // threads, length * (k + 1) // threads) for k in range(threads)]


def _in_parallel(work: Callable[[slice], None], spans: list[slice]) -> None:
    """Run ``work`` on every span, on a thread pool when there are several."""
    global _POOL
    if len(spans) == 1:
        work(spans[0])
        return
    if _POOL is None or _POOL._max_workers < len(spans):
        _POOL = ThreadPoolExecutor(max_workers=len(spans), thread_name_prefix="idspn-sort")
    list(_POOL.map(work, spans))


def _argsort_rows(rows: np.ndarray) -> np.ndarray:
    """Stable descending argsort of each row of ``(R, N)``, split over torch's threads if large."""
    if rows.dtype != np.float32:
        def sort(part: np.ndarray) -> np.ndarray:
            return np.argsort(-part, axis=-1, kind="stable")
    elif rows.shape[-1] >= _MIN_BUCKETED:
        sort = _bucketed_argsort_descending
    else:
        sort = _packed_argsort_descending
    spans = _spans(len(rows), rows.size)
    if len(spans) == 1:
        return sort(rows)
    perm = np.empty(rows.shape, dtype=np.int64)

    def work(span: slice) -> None:
        perm[span] = sort(rows[span])

    _in_parallel(work, spans)
    return perm


def _count_ranks(columns: np.ndarray) -> np.ndarray:
    """Stable descending rank of every entry of ``(N, R)`` within its column (uint8).

    Position i precedes position j > i iff ``x_i >= x_j``: each pair adds one to exactly one rank.
    """
    n, length = columns.shape
    ranks = np.zeros(columns.shape, dtype=np.uint8)

    def work(span: slice) -> None:
        first = np.empty(span.stop - span.start, dtype=bool)
        for i in range(n):
            for j in range(i + 1, n):
                np.greater_equal(columns[i, span], columns[j, span], out=first)
                ranks[j, span] += first
                np.logical_not(first, out=first)
                ranks[i, span] += first

    _in_parallel(work, _spans(length, columns.size))
    return ranks


def _memory_order(x: Tensor, first: int | None = None, last: int | None = None) -> list[int]:
    """Dims of ``x`` outermost-first in memory, with ``first`` / ``last`` forced to the ends."""
    others = sorted((d for d in range(x.dim()) if d not in (first, last)), key=lambda d: -x.stride(d))
    return [*([first] if first is not None else []), *others, *([last] if last is not None else [])]


def set_dim_outermost(set_size: int) -> bool:
    """Whether ``descending_ranks`` is fastest with the set dim outermost in memory (counting) or
    innermost (sorting); encoders lay out their features accordingly."""
    return set_size <= COUNTING_MAX


def _inverse(order: list[int]) -> list[int]:
    return [order.index(d) for d in range(len(order))]


def _sortable_on_cpu(x: Tensor, dim: int) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.numel() > 0
            and np.little_endian and x.shape[dim] < 2**31)


def _argsort_in_memory_order(x: Tensor, dim: int) -> tuple[Tensor, list[int]]:
    """``(perm, order)``: the stable descending argsort of ``x.permute(order)`` along its last dim,
    contiguous, where ``order`` visits the other dims outermost-first in memory and ``dim`` last
    (no copy of ``x`` when ``dim`` is innermost in memory)."""
    order = _memory_order(x, last=dim)
    rows = x.permute(order).contiguous()
    perm = _argsort_rows(rows.numpy().reshape(-1, x.shape[dim]))
    return torch.from_numpy(perm).view(rows.shape), order


def argsort_descending(x: Tensor, dim: int = 1) -> Tensor:
    """Indices that stably sort ``x`` in descending order along ``dim`` (ties by position).

    Args:
        x: floating tensor, e.g. ``(B, N, L)`` element features.
        dim: the dimension to sort along.

    Returns:
        ``torch.long`` tensor of the same shape as ``x`` (and the same memory order when the
        sorted dim is innermost in memory).
    """
    x = x.detach()
    dim = dim % x.dim()
    if not _sortable_on_cpu(x, dim):
        return torch.sort(x, dim=dim, descending=True, stable=True).indices
    perm, order = _argsort_in_memory_order(x, dim)
    return perm.permute(_inverse(order))


def descending_ranks(x: Tensor, dim: int = 1) -> Tensor:
    """Rank of every element in the stable descending order along ``dim`` (0: the largest).

    ``descending_ranks(x)`` is the inverse permutation of ``argsort_descending(x)``; ties are
    ranked by position.

    Args:
        x: floating tensor, e.g. ``(B, N, L)`` element features.
        dim: the dimension to rank along.

    Returns:
        ``torch.long`` tensor of the same shape and memory order as ``x``.
    """
    x = x.detach()
    dim = dim % x.dim()
    n = x.shape[dim]
    if not _sortable_on_cpu(x, dim):
        perm = torch.sort(x, dim=dim, descending=True, stable=True).indices
        shape = [n if d == dim else 1 for d in range(x.dim())]
        positions = torch.arange(n, device=x.device).view(shape).expand_as(perm)
        return torch.empty_like(perm).scatter_(dim, perm, positions)
    if n <= COUNTING_MAX:
        order = _memory_order(x, first=dim)
        columns = x.permute(order).contiguous()  # (N, ...): a view when the set dim is outermost
        ranks = torch.from_numpy(_count_ranks(columns.numpy().reshape(n, -1))).view(columns.shape)
        return ranks.permute(_inverse(order)).long()
    perm, order = _argsort_in_memory_order(x, dim)  # (..., N) contiguous: invert it in place there
    positions = torch.arange(n).expand_as(perm)
    return torch.empty_like(perm).scatter_(-1, perm, positions).permute(_inverse(order))
