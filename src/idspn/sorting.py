"""Stable descending argsort along the set dimension, fast on CPU.

FSPool sorts every feature across the set at every inner step of the decoder, so sorting is the
largest cost of an iDSPN forward pass outside the matrix products. On CPU, ``torch.sort`` over many
short rows is several times slower than NumPy's SIMD sort of plain integers, so for ``float32`` CPU
tensors we sort 64-bit keys that pack an order-preserving integer image of each value (high 32 bits)
with its position (low 32 bits): sorting the keys alone gives the permutation, exactly (rows of 32
or more use 32-bit keys with the position in the low bits, repaired where two values share the rest;
see ``_bucketed_order``). The rows are read in the tensor's own memory order (no transposing copy
when the sorted dim is the innermost in memory) and split over torch's intra-op threads (NumPy
releases the GIL while it works).

FSPool needs the *rank* of every element rather than the permutation. For short sets (at most
``COUNTING_MAX`` elements, e.g. the 8 or 10 of the autoencoding and CLEVR models) ranks are counted
directly, one vectorised comparison per pair of positions, which is several times faster than
sorting millions of rows of 8; longer sets invert the sort's permutation by a second integer sort.
Where FSPool only needs the weight of each rank and no gradient (the decoder's inner loop),
``lookup_by_rank`` lets that second sort carry the weights themselves back to the elements' positions
(64-bit keys: position in the high word, the weight's bits in the low word), so no rank array is
written and no gather is needed.

The sort must be *stable* (ties broken by position, the same rule in every feature). With an
arbitrary tie-breaking rule per feature, equal elements could be ranked first in one feature and
last in another depending on the input order, and the decoder would no longer be
multiset-equivariant (Definition 2); with one positional rule, permuting equal inputs permutes the
outputs (Appendix A.2). The permutation is piecewise constant in the input, so no gradient flows
through it (Eq. 11): callers gather or scatter with it to stay differentiable. NaN inputs give an
arbitrary order; the decoders check their outputs for non-finite values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd import forward_ad

from .row_threads import row_spans, run_spans

__all__ = [
    "argsort_descending", "descending_ranks", "descending_values", "lookup_by_rank", "COUNTING_MAX", "set_dim_outermost",
]

COUNTING_MAX = 16  # longest set whose ranks are counted pairwise rather than sorted
_MIN_BUCKETED = 32  # row length from which 32-bit bucketed keys beat exact 64-bit keys
_BLOCK_ELEMENTS = 1 << 18  # elements ranked per block by ``lookup_by_rank``: its passes stay in cache


def _descending_keys(rows: np.ndarray) -> np.ndarray:
    """int32 keys of a float32 array whose ascending order is the values' descending order."""
    bits = rows.view(np.int32)
    sign = bits >> 31  # -1 for negative floats (and -0.0), else 0
    keys = sign & 0x7FFFFFFF
    keys ^= bits  # negative floats: flip the value bits, so integer order = float order
    keys -= sign  # -0.0 (key -1) onto +0.0 (key 0): equal values, tied as torch.sort ties them
    np.invert(keys, out=keys)  # descending
    return keys


def _packed_order(rows: np.ndarray) -> np.ndarray:
    """Stable descending argsort (int32) of each row of a C-contiguous ``(R, N)`` float32 array."""
    keys = np.empty(rows.shape, dtype=np.int64)
    halves = keys.view(np.int32).reshape(*rows.shape, 2)  # little-endian: [..., 0] is the low word
    halves[..., 1] = _descending_keys(rows)
    halves[..., 0] = np.arange(rows.shape[-1], dtype=np.int32)
    keys.sort(axis=-1)
    return np.ascontiguousarray(halves[..., 0])


def _bucketed_order(rows: np.ndarray) -> np.ndarray:
    """``_packed_order`` for long rows, through 32-bit keys (2-4x faster to sort).

    The key keeps the top ``32 - b`` bits of the order-preserving image of each value and the
    position in the low ``b = ceil(log2 N)`` bits, so sorting orders the values by bucket, and
    within a bucket by position. Adjacent elements of one bucket are in order only if their values
    do not increase; the few rows where they do are sorted again with exact 64-bit keys.
    """
    n = rows.shape[-1]
    shift = (n - 1).bit_length()
    low = np.int32((1 << shift) - 1)
    keys = _descending_keys(rows)
    keys &= ~low
    keys |= np.arange(n, dtype=np.int32)
    keys.sort(axis=-1)
    buckets = keys.reshape(-1) >> shift
    # Rows with two adjacent keys in one bucket (a pair straddling two rows only adds a check).
    suspect = np.unique(np.flatnonzero(buckets[1:] == buckets[:-1]) // n)
    keys &= low
    if suspect.size:
        values = np.take_along_axis(rows[suspect], keys[suspect], axis=-1)
        redo = suspect[(values[:, 1:] > values[:, :-1]).any(-1)]
        if redo.size:
            keys[redo] = _packed_order(rows[redo])
    return keys


def _invert_rows(perm: np.ndarray) -> np.ndarray:
    """Inverse of every row of an ``(R, N)`` permutation array, overwriting it when it can.

    Sorting the keys ``perm[j] << b | j`` puts ``j`` (the rank) at position ``perm[j]``; integer
    sorts of short rows are several times faster than a scatter of the positions.
    """
    n = perm.shape[-1]
    shift = (n - 1).bit_length()
    if 2 * shift >= 8 * perm.itemsize - 1:
        return np.argsort(perm, axis=-1)
    perm <<= shift
    perm |= np.arange(n, dtype=perm.dtype)
    perm.sort(axis=-1)
    perm &= (1 << shift) - 1
    return perm


def _carry_to_positions(perm: np.ndarray, payload: np.ndarray) -> np.ndarray:
    """``out[..., perm[..., j]] = payload[..., j]`` for int32 permutations of the last dim.

    One sort of 64-bit keys ``perm << 32 | bits(payload)``: the positions are distinct within a row,
    so they alone decide the order, and the low words arrive in position order.

    Args:
        perm: ``(..., N)`` int32, a permutation of ``range(N)`` in every row.
        payload: float32, broadcastable to ``perm``.

    Returns:
        float32 array of ``perm``'s shape (a strided view of the sorted keys).
    """
    keys = np.empty(perm.shape, dtype=np.int64)
    halves = keys.view(np.int32).reshape(*perm.shape, 2)  # little-endian: [..., 0] is the low word
    halves[..., 1] = perm
    halves[..., 0] = payload.view(np.int32)
    keys.sort(axis=-1)
    return halves[..., 0].view(np.float32)


def _sort_rows(rows: np.ndarray, ranks: bool) -> np.ndarray:
    """Stable descending argsort of each row of ``(R, N)`` (or, with ``ranks``, its inverse: the
    rank of every element) as int64, split over torch's threads if large."""
    if rows.dtype != np.float32:
        def order(part: np.ndarray) -> np.ndarray:
            return np.argsort(-part, axis=-1, kind="stable")
    elif rows.shape[-1] >= _MIN_BUCKETED:
        order = _bucketed_order
    else:
        order = _packed_order
    out = np.empty(rows.shape, dtype=np.int64)

    def work(span: slice) -> None:
        perm = order(rows[span])
        out[span] = _invert_rows(perm) if ranks else perm

    run_spans(work, row_spans(len(rows), rows.size))
    return out


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

    run_spans(work, row_spans(length, columns.size))
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


def _sort_in_memory_order(x: Tensor, dim: int, ranks: bool) -> Tensor:
    """``_sort_rows`` along ``dim`` of ``x``, reading the rows in memory order (no copy of ``x`` when
    ``dim`` is innermost in memory). The result has the shape of ``x``; in memory it is laid out as
    ``x`` with ``dim`` moved innermost (``x``'s own layout when ``dim`` already is)."""
    order = _memory_order(x, last=dim)
    rows = x.permute(order).contiguous()
    out = _sort_rows(rows.numpy().reshape(-1, x.shape[dim]), ranks)
    return torch.from_numpy(out).view(rows.shape).permute(_inverse(order))


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
    return _sort_in_memory_order(x, dim, ranks=False)


def descending_ranks(x: Tensor, dim: int = 1) -> Tensor:
    """Rank of every element in the stable descending order along ``dim`` (0: the largest).

    ``descending_ranks(x)`` is the inverse permutation of ``argsort_descending(x)``; ties are
    ranked by position.

    Args:
        x: floating tensor, e.g. ``(B, N, L)`` element features.
        dim: the dimension to rank along.

    Returns:
        ``torch.long`` tensor of the shape of ``x``, in ``x``'s memory layout when ``dim`` is
        outermost (sets of at most ``COUNTING_MAX``) or innermost (longer sets) in memory.
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
    return _sort_in_memory_order(x, dim, ranks=True)


def descending_values(x: Tensor) -> Tensor:
    """``x`` sorted in descending order along the last dim (values only, so ties need no rule)."""
    x = x.detach()
    if not _sortable_on_cpu(x, x.dim() - 1):
        return torch.sort(x, dim=-1, descending=True).values
    # Sorting the negated values ascending gives the descending order in a contiguous array.
    rows = x.contiguous().numpy().reshape(-1, x.shape[-1])
    out = np.empty_like(rows)

    def work(span: slice) -> None:
        np.negative(rows[span], out=out[span])
        out[span].sort(axis=-1)
        np.negative(out[span], out=out[span])

    run_spans(work, row_spans(len(rows), rows.size))
    return torch.from_numpy(out).view(x.shape)


def _gather_in_memory_order(table: Tensor, dim: int, ranks: Tensor) -> Tensor:
    """``torch.gather(table.expand_as(ranks), dim, ranks)``, with the (small) table laid out in the
    memory order of ``ranks`` first: gathering along a strided dim is several times slower."""
    order = _memory_order(ranks)
    table = table.permute(order).contiguous().expand([ranks.shape[d] for d in order])
    return torch.gather(table, order.index(dim), ranks.permute(order)).permute(_inverse(order))


def lookup_by_rank(x: Tensor, table: Tensor, dim: int = 1) -> Tensor:
    """Each element's entry of ``table`` at its stable descending rank along ``dim``.

    ``lookup_by_rank(x, table, dim)`` equals ``torch.gather(table.expand_as(x), dim,
    descending_ranks(x, dim))``, e.g. FSPool's weight of every element (``table`` holds the weight of
    the r-th largest). It is differentiable in ``table`` (not in ``x``: ranks are piecewise constant,
    Eq. 11). When no gradient is needed, long float32 rows on CPU skip the rank array: the weights
    are carried back to the elements by the sort that would otherwise invert the permutation (see
    the module docstring).

    Args:
        x: floating tensor, e.g. ``(B, N, L)`` element features.
        table: floating tensor with as many dims as ``x``, broadcastable to ``x`` and of full size
            along ``dim``, e.g. ``(1, N, L)``.
        dim: the dimension to rank along.

    Returns:
        Tensor of the shape of ``x`` and the dtype of ``table``, in ``x``'s memory layout when
        ``dim`` is outermost (sets of at most ``COUNTING_MAX``) or innermost (longer sets) in memory.
    """
    x = x.detach()
    dim = dim % x.dim()
    n = x.shape[dim]
    if (not isinstance(table, Tensor) or not table.is_floating_point() or table.dim() != x.dim()
            or table.shape[dim] != n or torch.broadcast_shapes(table.shape, x.shape) != x.shape):
        raise ValueError(f"table must be a floating tensor broadcastable to x's shape {tuple(x.shape)} with "
                         f"{n} entries along dim {dim}, got {getattr(table, 'shape', type(table).__name__)}")
    if x.dim() == 1:
        return lookup_by_rank(x.unsqueeze(0), table.unsqueeze(0), dim=1).squeeze(0)
    needs_grad = torch.is_grad_enabled() and table.requires_grad
    fused = not needs_grad and forward_ad.unpack_dual(table).tangent is None
    if (not fused or n <= COUNTING_MAX or x.dtype != torch.float32 or table.dtype != torch.float32
            or not _sortable_on_cpu(x, dim)):
        return _gather_in_memory_order(table, dim, descending_ranks(x, dim))
    order = _memory_order(x, last=dim)
    rows = x.permute(order).contiguous().numpy()  # (d0, d1, ..., N)
    rows = rows.reshape(rows.shape[0], -1, n)  # (d0, d1, N)
    # The table in the same order, made contiguous before it is broadcast (it is small).
    payload = table.detach().permute(order).contiguous()
    middle = [x.shape[d] for d in order[1:-1]]
    if any(payload.shape[i] > 1 for i in range(1, len(order) - 1)):  # else broadcast as one
        payload = payload.expand(payload.shape[0], *middle, n)
    payload = payload.reshape(payload.shape[0], -1, n).numpy()  # (d0 | 1, d1 | 1, N)
    shared = len(payload) == 1  # one table row for every d0
    out = np.empty(rows.shape, dtype=np.float32)
    per_block = max(1, _BLOCK_ELEMENTS // rows[0].size)
    order_of = _bucketed_order if n >= _MIN_BUCKETED else _packed_order

    def work(span: slice) -> None:
        for start in range(span.start, span.stop, per_block):
            part = slice(start, min(start + per_block, span.stop))
            block = rows[part]  # (k, d1, N)
            perm = order_of(block.reshape(-1, n)).reshape(block.shape)
            out[part] = _carry_to_positions(perm, payload if shared else payload[part])

    run_spans(work, row_spans(len(rows), rows.size))
    return torch.from_numpy(out).view([x.shape[d] for d in order]).permute(_inverse(order))
