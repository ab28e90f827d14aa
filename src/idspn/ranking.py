"""Ranks of set elements, the sorting inside FSPool (Zhang et al., 2020; Appendix A).

FSPool weights the r-th largest value of every feature, so a decoder that optimises through it
needs, at every inner step, the rank of every element within every feature. Everything here is
torch code (the CPU sort backend is a registered torch custom op): it runs under autograd,
``torch.func`` (vmap, jvp, vjp, grad, jacrev), ``torch.compile`` (``fullgraph=True``) and on any
device, and makes no host synchronisation (``copy_first_occurrences_`` would off the CPU, where
encoders do not use it).

Ties are broken by position, with one rule for every feature (a stable descending order). That rule
is what makes a decoder with FSPool multiset-equivariant on inputs with exact duplicates (Definition
2, Appendix A.2): equal elements are ranked in the order they come in, in every feature, so
permuting them permutes the outputs. It only holds if equal input elements really give equal
features, and a matrix product need not: BLAS kernels may round equal rows differently depending on
where they fall in their tiles. ``duplicate_index`` finds the exact duplicates among the rows of the
encoder's *input*, and every duplicate gets the features of its first occurrence before ranking,
so the tie rule applies whatever the arithmetic did: ``canonical_keys`` returns ranking keys with
those rows copied (no host synchronisation, any device), ``copy_first_occurrences_`` copies them
into the features in place (on CPU: no copy of the features at all when nothing repeats). An
encoder keeps the fingerprints' multipliers as a buffer (``fingerprint_table``), so that a compiled
graph on a GPU reads them on the GPU.

How the ranks are computed depends on where the code runs, not on what it computes (each way is
tested against ``torch.sort(stable=True)``):

* under ``torch.compile``, by counting pairwise comparisons, which inductor fuses into one pass
  over the set without materialising the pairs (up to ``COUNTING_MAX_COMPILED`` elements); on CPU
  a table that needs a gradient is looked up by a one-hot sum for short sets
  (``ONE_HOT_MAX_COMPILED``), whose backward inductor fuses, unlike a gather's scatter-add;
* eagerly on CPU for short sets (up to ``COUNTING_MAX_EAGER``), by the same count, one element
  against the rest of its set at a time (no sort, no ``(N, N)`` intermediate);
* otherwise by a stable sort: on CPU by default NumPy's vectorised integer sort
  (``idspn.numpy_sort``, several times faster than ``torch.sort`` on rows this short), elsewhere
  or after ``set_sort_backend("torch")`` by ``torch.sort``.

No gradient flows through a rank: ranks are piecewise constant in the features (Eq. 11), so the
weights they select are differentiable in the weight table only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy
import torch
from torch import Tensor

from . import numpy_sort

__all__ = [
    "COUNTING_MAX_COMPILED",
    "COUNTING_MAX_EAGER",
    "ONE_HOT_MAX_COMPILED",
    "SORT_BACKENDS",
    "canonical_keys",
    "copy_first_occurrences_",
    "descending_ranks",
    "duplicate_index",
    "fingerprint_table",
    "get_sort_backend",
    "lookup_by_rank",
    "set_sort_backend",
    "sort_descending",
    "use_sort_backend",
]

# Eager CPU: longest set ranked by counting, one element at a time (at most 256), per sort backend:
# the set size up to which counting beats that backend's sort, the smallest of three runs
# of `benchmarks/rank_crossover.py` (docs/benchmark-results.md).
COUNTING_MAX_EAGER = {"numpy": 12, "torch": 28}
COUNTING_MAX_COMPILED = 128  # compiled: longest set ranked by fused pairwise counting
# Compiled on CPU, with a gradient to the table: longest set whose lookup is a one-hot sum over its
# ranks (N times the work of a gather, with a fused backward). Not tuned: the autoencoding sets' size.
ONE_HOT_MAX_COMPILED = 8

SORT_BACKENDS = ("numpy", "torch")  # how long sets are sorted on CPU (other devices: torch)
_sort_backend = "numpy"

_FINGERPRINT_PRIME = 1_048_573  # q, the largest prime below 2^20: three residues pack into 60 bits


# --- exact duplicates among the rows of a set --------------------------------------------------


def _multiplier_values(count: int) -> numpy.ndarray:
    """``count`` fixed pseudo-random integers in ``[0, q)``: splitmix64 of ``1..count`` (uint64
    arithmetic wraps modulo 2^64, as splitmix64 is defined), mod q, as float64."""
    k = numpy.arange(1, count + 1, dtype=numpy.uint64) * numpy.uint64(0x9E3779B97F4A7C15)
    k = (k ^ (k >> numpy.uint64(30))) * numpy.uint64(0xBF58476D1CE4E5B9)
    k = (k ^ (k >> numpy.uint64(27))) * numpy.uint64(0x94D049BB133111EB)
    return ((k ^ (k >> numpy.uint64(31))) % numpy.uint64(_FINGERPRINT_PRIME)).astype(numpy.float64)


# The multipliers of rows of up to 4096 16-bit words, made at import; traced code reads them as a
# constant (computing them inside a compiled graph cost seconds of tracing, or work in every kernel).
_MULTIPLIER_TABLE = torch.from_numpy(_multiplier_values(3 * 4096))
# The multipliers as tensors, one per (width, device), so that a GPU gets no copy per call.
_MULTIPLIERS: dict[tuple[int, torch.device], Tensor] = {}


def fingerprint_table(words: int) -> Tensor:
    """``(words, 3)`` int64 on CPU: the multipliers that fingerprint rows of up to ``words`` 16-bit
    words (a float32 feature is two words, a float64 one four).

    ``duplicate_index`` finds them in a cache per device, filled on first use. Code that may run
    compiled off the CPU before any eager call, such as an encoder's forward, keeps this table as
    a module buffer instead and passes it (``duplicate_index(x, table)``): the buffer moves with the
    module (``.to(device)``) and reaches a compiled graph on its device, where the cache, filled
    inside the graph, would hand it a CPU constant to copy to the device in every call.
    """
    if not isinstance(words, int) or isinstance(words, bool) or words < 1:
        raise ValueError(f"words must be a positive int, got {words!r}")
    if 3 * words <= _MULTIPLIER_TABLE.numel():
        values = _MULTIPLIER_TABLE[: 3 * words]
    else:
        values = torch.from_numpy(_multiplier_values(3 * words))
    return values.view(words, 3).long()


def _fingerprint_multipliers(width: int, device: torch.device, table: Tensor | None) -> Tensor:
    """``(width, 3)``: the fixed pseudo-random integers in ``[0, q)``, three per word (float64 from
    the cache, int64 from a ``table`` of ``fingerprint_table``)."""
    if table is not None:
        if table.is_floating_point() or table.dim() != 2 or table.shape[1] != 3 or table.shape[0] < width:
            raise ValueError(
                f"table must be an integer (words, 3) tensor from fingerprint_table with words >= {width} "
                f"(the 16-bit words of a row), got {table.dtype} {tuple(table.shape)}"
            )
        if table.device != device:
            raise ValueError(f"table must be on the rows' device {device}, got {table.device}")
        return table[:width]
    key = (width, device)
    multipliers = _MULTIPLIERS.get(key)
    if multipliers is None:
        multipliers = fingerprint_table(width).to(device, torch.float64)
        if type(multipliers) is Tensor and not torch.compiler.is_compiling():  # not a fake or traced tensor
            _MULTIPLIERS[key] = multipliers
    return multipliers


def _sums_of_halves(words: Tensor, multipliers: Tensor) -> Tensor:
    """``words.view(int16).long() @ multipliers`` from 32-bit words, in int64 arithmetic.

    The same sums as the float64 product over the 16-bit view (the low half of each word first, as
    a little-endian view lays them out), written for inductor, which fuses this into one pass over
    the words but handles the 16-bit view and a float64 product less well.
    """
    w = words.to(torch.int64)  # (B, N, W / 2)
    low = ((w & 0xFFFF) ^ 0x8000) - 0x8000  # the low half, signed as the 16-bit view reads it
    high = w >> 16  # the high half, signed
    m = multipliers.view(-1, 2, 3)  # (W / 2, 2, 3): rows of the low and the high halves
    return torch.stack([(low * m[:, 0, k] + high * m[:, 1, k]).sum(-1) for k in range(3)], dim=-1)


def _row_fingerprints(x: Tensor, table: Tensor | None = None) -> Tensor:
    """``(B, N, D) -> (B, N, 3)`` int64 fingerprint of every row's bits (equal rows: equal prints).

    Each row's bits, read as 16-bit integers ``w_j``, are hashed three times as ``sum_j a_j w_j``
    with the fixed pseudo-random multipliers ``a_j`` in ``[0, q)`` of ``_fingerprint_multipliers``.
    The sums are taken by a float64 matrix product whose every term and partial sum is an integer
    below 2^53 (compiled: in int64 arithmetic on the halves of 32-bit words, ``_sums_of_halves``),
    so they are exact in any order of summation, on every machine and device: equal rows always
    get equal fingerprints. Two different rows get equal ones only if all three sums agree, and so
    agree modulo the prime q: a chance of at most ``q^-3 = 2^-60`` for inputs not chosen to collide
    (for multipliers drawn uniformly the sum modulo q is a universal hash; rows with a regular
    structure, such as one-hot rows, are no more likely to collide than any others). ``-0.0`` is
    first turned into ``+0.0`` so that rows equal in value are equal in bits.
    """
    x = x.detach()
    # -0.0 -> +0.0: IEEE addition gives -0.0 + 0.0 = +0.0, but inductor simplifies ``x + 0.0`` away
    x = torch.where(x == 0, 0.0, x) if torch.compiler.is_compiling() else x + 0.0
    words = x.view(torch.int8 if x.element_size() == 1 else torch.int16)  # (B, N, W), |w| <= 2^15
    width = words.shape[-1]
    if width * 2**15 * _FINGERPRINT_PRIME >= 2**53:
        raise ValueError(f"rows of {width} 16-bit words are too wide to fingerprint; got shape {tuple(x.shape)}")
    multipliers = _fingerprint_multipliers(width, x.device, table)  # (W, 3)
    if torch.compiler.is_compiling() and x.element_size() >= 4:
        return _sums_of_halves(x.view(torch.int32), multipliers.long())  # (B, N, 3)
    return (words.to(torch.float64) @ multipliers.to(torch.float64)).long()  # (B, N, 3), exact integers


def _rows_at(x: Tensor, index: Tensor) -> Tensor:
    """``(B, N, D)``: row ``index[b, n]`` of set ``b`` at ``[b, n]``, as whole rows (faster than an
    elementwise gather)."""
    b, n, _ = x.shape
    rows = (index + n * torch.arange(b, device=x.device).unsqueeze(1)).flatten()  # (B * N,) into (B * N, D)
    return x.flatten(0, 1).index_select(0, rows).view_as(x)


def duplicate_index(x: Tensor, table: Tensor | None = None) -> Tensor:
    """Position of the first row equal to each row, within its set.

    ``out[b, n]`` is the smallest ``m`` with ``x[b, m] == x[b, n]`` (all features equal in value), so
    ``out[b, n] == n`` for a row without an earlier duplicate. Candidates are found by comparing row
    fingerprints (``(B, N, N)`` integer comparisons) and then checked feature by feature, so two
    different rows are never taken for duplicates; a duplicate could be missed only if an earlier,
    different row shared its fingerprint (a chance of about 2^-60 per pair). Eagerly the fingerprint
    is one integer per row, its three sums modulo q packed; compiled, the three sums themselves are
    compared, since inductor would recompute the packing for every pair.

    Args:
        x: ``(B, N, D)`` floating tensor, e.g. the input of a set encoder.
        table: the fingerprint multipliers, ``fingerprint_table(words)`` on ``x``'s device for rows of
            up to ``words`` 16-bit words (an encoder's buffer); None: from a cache per device.

    Returns:
        ``(B, N)`` long tensor.
    """
    if x.shape[1] == 0:
        return torch.empty(x.shape[:2], dtype=torch.long, device=x.device)  # an empty set repeats nothing
    prints = _row_fingerprints(x, table)  # (B, N, 3)
    if torch.compiler.is_compiling():  # the three sums compared as they are: one fused pass
        same = (prints.unsqueeze(2) == prints.unsqueeze(1)).all(-1)  # (B, N, N): [b, n, m]
    else:  # eagerly, one integer per row: the three residues modulo q packed below q^3 < 2^60
        q = _FINGERPRINT_PRIME
        residues = prints.remainder(q)  # (B, N, 3) in [0, q)
        packed = (residues[..., 0] * q + residues[..., 1]) * q + residues[..., 2]  # (B, N)
        same = packed.unsqueeze(2) == packed.unsqueeze(1)  # (B, N, N): [b, n, m]
    candidate = same.to(torch.uint8).argmax(dim=2)  # (B, N): first m with the same fingerprint
    x = x.detach()
    confirmed = (_rows_at(x, candidate) == x).all(dim=-1)  # (B, N): the candidate row equals the row
    positions = torch.arange(x.shape[1], device=x.device).expand_as(candidate)
    return torch.where(confirmed, candidate, positions)


def canonical_keys(h: Tensor, duplicates: Tensor | None) -> Tensor:
    """``h`` detached, every duplicate's row replaced by its first occurrence's (exactly).

    Args:
        h: ``(B, N, L)`` element features.
        duplicates: ``(B, N)`` from ``duplicate_index`` of the rows ``h`` was computed from, or
            None (no duplicates to canonicalise).

    Returns:
        ``(B, N, L)`` ranking keys: equal wherever the input rows were equal.
    """
    h = h.detach()
    if duplicates is None:
        return h
    if torch.compiler.is_compiling() and h.device.type == "cpu":
        # Inductor would fuse a gather into the ranking's inner loop and vectorise that loop badly
        # (several times slower), so the selection is written as a sum over the set with one
        # non-zero term per key (exact in any order of summation); inductor writes it out first.
        select = duplicates.unsqueeze(-1) == torch.arange(h.shape[1], device=h.device)  # (B, N, M)
        return torch.where(select.unsqueeze(-1), h.unsqueeze(1), 0.0).sum(2)  # (B, N, L)
    return _rows_at(h, duplicates)


def _check_copy_arguments(h: Tensor, duplicates: Tensor) -> None:
    if duplicates.is_floating_point() or duplicates.shape != h.shape[:-1]:
        raise ValueError(
            f"duplicates must be an integer tensor of h's shape without its last dim {tuple(h.shape[:-1])}, "
            f"got {duplicates.dtype} {tuple(duplicates.shape)}"
        )
    if h.requires_grad:
        raise ValueError("h must not require grad: pass h.detach() (the copies take no gradient)")


@torch.library.custom_op("idspn::copy_first_occurrences_", mutates_args=("h",))
def copy_first_occurrences_(h: Tensor, duplicates: Tensor) -> None:
    """In place: every row of ``h`` whose input row had an earlier equal one becomes an exact copy
    of that first occurrence's row (what ``canonical_keys`` returns, without copying ``h``).

    Meant for an encoder's own features on CPU, right after the layer that made them and before any
    op saved them for a backward pass: equal inputs then have equal features everywhere after, in
    the ranking and in the pooled value alike. Rows are found with ``nonzero``, so a set without
    duplicates costs one comparison per element and no copy; on a GPU ``nonzero`` would wait for
    the device, so encoders there use ``canonical_keys``. A registered custom op (with fake and vmap
    rules), so that ``torch.compile`` leaves its data-dependent part to it; it has no gradient:
    pass a detached ``h``.

    Args:
        h: ``(..., N, L)`` element features, changed in place.
        duplicates: ``(..., N)`` from ``duplicate_index`` of the rows ``h`` was computed from.
    """
    _check_copy_arguments(h, duplicates)
    n = h.shape[-2]
    rows = (duplicates != torch.arange(n, device=duplicates.device)).nonzero()  # (K, dims): the copies
    if rows.numel():
        index = rows.unbind(1)
        h[index] = h[index[:-1] + (duplicates[index],)]


@copy_first_occurrences_.register_fake
def _(h: Tensor, duplicates: Tensor) -> None:
    _check_copy_arguments(h, duplicates)


@copy_first_occurrences_.register_vmap
def _(info: object, in_dims: tuple[int | None, int | None], h: Tensor, duplicates: Tensor) -> tuple[None, None]:
    h_dim, d_dim = in_dims  # vmap calls this rule only with at least one of them batched
    if h_dim is None:
        raise ValueError("copy_first_occurrences_: h must be batched wherever duplicates is (it changes in place)")
    h = h.movedim(h_dim, 0)  # a view: the copies land in the batched tensor
    size = h.shape[0]
    d = duplicates.movedim(d_dim, 0) if d_dim is not None else duplicates.expand(size, *duplicates.shape)  # (V, ..., N)
    copy_first_occurrences_(h, d)
    return None, None


# --- ranks -------------------------------------------------------------------------------------


def set_sort_backend(name: str) -> str:
    """Choose how CPU tensors are sorted here; returns the previous choice.

    It governs the ranks of sets too long to count and ``sort_descending`` (the simplex
    projection's sort). ``"numpy"`` (the default): ``idspn.numpy_sort``, NumPy's vectorised
    integer sort behind a torch custom op (it composes with autograd, ``torch.func`` and
    ``torch.compile``); it runs on one thread, so on a machine with many cores ``torch.sort`` may
    be faster (``benchmarks/inner_step_parts.py`` times both). ``"torch"``: ``torch.sort``, as on
    every other device. Both give the same orders for keys without NaN. The choice is one setting
    for the whole process (not per thread).
    """
    global _sort_backend
    if name not in SORT_BACKENDS:
        raise ValueError(f"name must be one of {SORT_BACKENDS}, got {name!r}")
    previous, _sort_backend = _sort_backend, name
    return previous


def get_sort_backend() -> str:
    """The backend ``set_sort_backend`` chose last."""
    return _sort_backend


@contextmanager
def use_sort_backend(name: str) -> Iterator[None]:
    """``set_sort_backend(name)`` for the body of a ``with`` block, then the previous choice again."""
    previous = set_sort_backend(name)
    try:
        yield
    finally:
        set_sort_backend(previous)


def _ranks_by_counting(x: Tensor) -> Tensor:
    """Stable descending ranks along dim 1 of ``(B, N, L)``, in ``x``'s float dtype: how many
    elements precede each.

    ``x_m`` precedes ``x_n`` if it is larger, or equal and earlier. Written for ``torch.compile``,
    which turns the sum into one fused reduction; the count is accumulated in ``x``'s float dtype,
    exact for any set of up to ``COUNTING_MAX_COMPILED`` elements (bfloat16 counts to 256).
    """
    n = x.shape[1]
    positions = torch.arange(n, device=x.device)
    earlier = positions.view(1, 1, n, 1) < positions.view(1, n, 1, 1)  # [., n, m, .]: m < n
    this, other = x.unsqueeze(2), x.unsqueeze(1)  # (B, N, 1, L), (B, 1, M, L)
    precedes = (other > this) | ((other == this) & earlier)  # (B, N, M, L)
    return precedes.to(x.dtype).sum(2)  # (B, N, L)


def _ranks_by_elements(x: Tensor) -> Tensor:
    """``_ranks_by_counting`` for short sets in eager mode, one element at a time.

    Element n's rank counts the earlier elements at least as large and the later ones larger: one
    comparison of ``x_n`` with the rest of the set and one sum per element, ``N`` small kernels
    instead of ``N^2`` and no ``(B, N, N, L)`` intermediate. Out of place throughout, so that
    ``torch.func.vmap`` can batch it.
    """
    ranks = []
    for n in range(x.shape[1]):
        this = x[:, n : n + 1]  # (B, 1, L)
        precedes = torch.cat([x[:, :n] >= this, x[:, n + 1 :] > this], dim=1)  # (B, N - 1, L)
        ranks.append(precedes.sum(1, dtype=torch.uint8))  # counts below COUNTING_MAX_EAGER: no int64 copy
    return torch.stack(ranks, dim=1).long()  # (B, N, L)


def _descending_order(rows: Tensor) -> Tensor:
    """``(..., K)``: the stable descending order of every row, by the chosen sort backend."""
    if _sort_backend == "numpy" and rows.device.type == "cpu":
        return numpy_sort.descending_order(rows)
    return torch.sort(rows.contiguous(), dim=-1, descending=True, stable=True).indices


def sort_descending(x: Tensor) -> Tensor:
    """The values of ``x`` sorted in descending order along its last dim, by the chosen backend.

    Args:
        x: ``(..., K)`` floating tensor.

    Returns:
        ``(..., K)`` tensor, each row in descending order (as ``torch.sort(x, descending=True)``).
    """
    return x.gather(-1, _descending_order(x.detach()))


def _counting_max(x: Tensor) -> int:
    if torch.compiler.is_compiling():
        return COUNTING_MAX_COMPILED
    return COUNTING_MAX_EAGER[_sort_backend] if x.device.type == "cpu" else 0


def _check_keys(x: Tensor, dim: int) -> int:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() == 0:
        raise ValueError(f"x must be a floating tensor with at least one dim, got {getattr(x, 'dtype', type(x))}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim must be in [{-x.dim()}, {x.dim()}) for a {x.dim()}-d tensor, got {dim}")
    return dim % x.dim()


def _as_sets(x: Tensor, dim: int) -> Tensor:
    """``x`` viewed as ``(B, N, L)`` sets along ``dim``: the dims before it and after it flattened."""
    n = x.shape[dim]
    return x.reshape(x.shape[:dim].numel(), n, x.shape[dim + 1 :].numel())


def _ranks(keys: Tensor) -> Tensor:
    """Stable descending ranks along dim 1 of ``(B, N, L)``, by whichever way suits the context."""
    if keys.shape[1] == 0:
        return torch.empty(keys.shape, dtype=torch.long, device=keys.device)
    if keys.shape[1] <= _counting_max(keys):
        return _ranks_by_counting(keys).long() if torch.compiler.is_compiling() else _ranks_by_elements(keys)
    return _ranks_by_sorting(keys)


def _ranks_by_sorting(keys: Tensor) -> Tensor:
    """Stable descending ranks along dim 1 of ``(B, N, L)``: the inverse of the sort's order.

    The sort runs on ``(B, L, N)`` rows, each set contiguous, which is faster than sorting along the
    strided set dim. The NumPy backend returns the ranks itself (``numpy_sort.descending_ranks``);
    after ``torch.sort`` they come from an out-of-place scatter, which ``vmap`` batches (it has no
    batching rule for ``scatter_``).
    """
    rows = keys.transpose(1, 2)  # (B, L, N): each set contiguous once sorted
    if _sort_backend == "numpy" and keys.device.type == "cpu":
        return numpy_sort.descending_ranks(rows).transpose(1, 2)  # (B, N, L)
    order = _descending_order(rows)  # (B, L, N)
    positions = torch.arange(keys.shape[1], device=keys.device).expand_as(order)
    return torch.zeros_like(order).scatter(2, order, positions).transpose(1, 2)  # (B, N, L)


def descending_ranks(x: Tensor, dim: int = 1) -> Tensor:
    """Rank of every element in the stable descending order along ``dim`` (0: the largest).

    Ties are ranked by position. NaN compares unequal to everything, so rows holding NaN get some
    ranks, not necessarily a permutation; a decoder reports non-finite values itself.

    Args:
        x: floating tensor, e.g. ``(B, N, L)`` ranking keys.
        dim: the dimension to rank along.

    Returns:
        ``torch.long`` tensor of the shape of ``x``.
    """
    dim = _check_keys(x, dim)
    return _ranks(_as_sets(x.detach(), dim)).reshape(x.shape)


def lookup_by_rank(x: Tensor, table: Tensor, dim: int = 1) -> Tensor:
    """Each element's entry of ``table`` at its stable descending rank along ``dim``.

    ``lookup_by_rank(x, table, dim)`` equals ``torch.gather(table.expand_as(x), dim,
    descending_ranks(x, dim))``, e.g. FSPool's weight of every element, where ``table`` holds the
    weight of the r-th largest. Differentiable in ``table``, not in ``x`` (Eq. 11).

    Args:
        x: floating tensor, e.g. ``(B, N, L)`` ranking keys.
        table: floating tensor with as many dims as ``x``, broadcastable to ``x`` and of full size
            along ``dim``, e.g. ``(1, N, L)``.
        dim: the dimension to rank along.

    Returns:
        Tensor of the shape of ``x`` and the dtype of ``table``.
    """
    dim = _check_keys(x, dim)
    n = x.shape[dim]
    fits = (
        isinstance(table, Tensor)
        and table.is_floating_point()
        and table.dim() == x.dim()
        and table.shape[dim] == n
        and all(t in (1, s) for t, s in zip(table.shape, x.shape, strict=True))
    )
    if not fits:
        raise ValueError(
            f"table must be a floating tensor broadcastable to x's shape {tuple(x.shape)} with "
            f"{n} entries along dim {dim}, got {getattr(table, 'shape', type(table).__name__)}"
        )
    keys = _as_sets(x.detach(), dim)  # (B, N, L)
    full = _as_sets(table.expand(x.shape), dim)  # (B, N, L): the entry of rank r at position r
    if n == 0:
        return full.reshape(x.shape)  # nothing to look up
    return _lookup_by_ranks(keys, full).reshape(x.shape)


def _lookup_by_ranks(keys: Tensor, full: Tensor) -> Tensor:
    """``(B, N, L)``: each element's entry of ``full`` at its rank, by a gather (out of place, so
    ``vmap`` may batch the keys, the table or both).

    Compiled on CPU, for a table that needs a gradient and a set of at most
    ``ONE_HOT_MAX_COMPILED`` elements, the entry is picked by a sum over the ranks with one
    non-zero term (exact): the gradient of a gather is a scatter-add, which inductor leaves to an
    eager kernel in the backward pass, while the sum's gradient is one fused reduction.
    """
    n = keys.shape[1]
    if n <= ONE_HOT_MAX_COMPILED and full.requires_grad and keys.device.type == "cpu" and torch.compiler.is_compiling():
        ranks = _ranks_by_counting(keys)  # (B, N, L) in the keys' float dtype: compared without integer vectors
        hit = ranks.unsqueeze(2) == torch.arange(n, device=keys.device, dtype=keys.dtype).view(1, 1, n, 1)
        return torch.where(hit, full.unsqueeze(1), 0.0).sum(2)  # hit: (B, N, R, L)
    return full.gather(1, _ranks(keys))
