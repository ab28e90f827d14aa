"""The NumPy backend of FSPool's sort: stable descending orders by NumPy's vectorised integer sort.

Ranking a long set (``ranking._ranks_by_sorting``) needs a stable descending sort of many short rows,
e.g. ``128 * 256`` rows of 64 keys per inner step of the numbering decoder. PyTorch's CPU sort
handles them one row at a time in scalar code; recent NumPy releases sort 64-bit integers with SIMD
kernels (AVX-512 or AVX2 where the CPU has them), on one thread. This module is the one place
where the inner loop leaves torch: ``benchmarks/inner_step_parts.py`` times the ranks both ways,
and ``idspn.ranking.set_sort_backend("torch")`` switches it off.

Every key becomes one ``int64`` whose ascending order is the stable descending order of the keys:
the float's bits mapped to an integer that *decreases* as the float increases, shifted left, with
the key's position in the low bits. The integers of one row are all distinct, so any sort of them
is stable, and the low bits of the sorted integers are the permutation.

The sort is registered as the custom op ``idspn::descending_order``, and the ranks it gives (its
inverse permutation, what FSPool looks its weights up by) as ``idspn::descending_ranks``, which
scatters them in place into one new tensor where an out-of-place scatter, the only kind that
``vmap`` batches, first fills and copies a tensor of the ranks' size. Both have a fake
implementation (so ``torch.compile`` traces them without a graph break) and a vmap rule (so
``torch.func.vmap`` batches them). Neither has a gradient: orders and ranks are integers, and no
gradient flows through a rank (Eq. 11).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["descending_order", "descending_ranks"]

_SIGN = -(2**31)  # the sign bit of an int32
_PACKED = (torch.float32, torch.float16, torch.bfloat16)  # exactly representable as float32


def _check_keys(keys: Tensor) -> None:
    if keys.dim() == 0:
        raise ValueError("keys must have at least one dim (the rows to sort are its last), got a 0-dim tensor")


@torch.library.custom_op("idspn::descending_order", mutates_args=())
def descending_order(keys: Tensor) -> Tensor:
    """Permutation that stably sorts the last dim of ``keys`` in descending order.

    Equals ``torch.sort(keys, dim=-1, descending=True, stable=True).indices`` for keys without NaN
    (``-0.0`` and ``0.0`` are equal, so they tie by position). NaN keys still give a permutation,
    but not torch's: a NaN with its sign bit set sorts last. float64 keys, and keys off the CPU,
    are sorted by ``torch.sort`` itself: a float64 and its position do not fit in one ``int64``.

    Args:
        keys: ``(..., N)`` floating tensor.

    Returns:
        ``(..., N)`` contiguous ``torch.long`` tensor.
    """
    _check_keys(keys)
    n = keys.shape[-1]
    if keys.device.type != "cpu" or keys.dtype not in _PACKED or keys.numel() == 0 or n >= 2**31:
        return torch.sort(keys, dim=-1, descending=True, stable=True).indices.contiguous()
    rows = torch.empty(keys.shape, dtype=torch.float32)  # (..., N) contiguous
    torch.add(keys, 0.0, out=rows)  # one copy: -0.0 becomes +0.0, half precision becomes float32
    bits = rows.view(torch.int32)
    flip = (bits >> 31).bitwise_not_().bitwise_or_(_SIGN)  # in place: one temporary, not three
    bits ^= flip  # positive floats: ~bits, negative ones: the sign bit flipped
    width = max(n - 1, 1).bit_length()
    positions = torch.arange(n, dtype=torch.int64)
    packed = bits.to(torch.int64).bitwise_left_shift_(width).bitwise_or_(positions)  # (..., N), distinct per row
    packed.numpy().sort(axis=-1)  # in place
    return packed.bitwise_and_((1 << width) - 1)


@descending_order.register_fake
def _(keys: Tensor) -> Tensor:
    _check_keys(keys)
    return keys.new_empty(keys.shape, dtype=torch.long)


@descending_order.register_vmap
def _(info: object, in_dims: tuple[int | None], keys: Tensor) -> tuple[Tensor, int | None]:
    (dim,) = in_dims
    if dim is None:
        return descending_order(keys), None
    return descending_order(keys.movedim(dim, 0)), 0


@torch.library.custom_op("idspn::descending_ranks", mutates_args=())
def descending_ranks(keys: Tensor) -> Tensor:
    """Rank of every key in the stable descending order of its row (0: the largest).

    The inverse permutation of ``descending_order(keys)``: ``out[..., order[..., j]] == j``.

    Args:
        keys: ``(..., N)`` floating tensor.

    Returns:
        ``(..., N)`` contiguous ``torch.long`` tensor.
    """
    _check_keys(keys)
    order = descending_order(keys)  # (..., N) contiguous
    positions = torch.arange(keys.shape[-1], device=keys.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


@descending_ranks.register_fake
def _(keys: Tensor) -> Tensor:
    _check_keys(keys)
    return keys.new_empty(keys.shape, dtype=torch.long)


@descending_ranks.register_vmap
def _(info: object, in_dims: tuple[int | None], keys: Tensor) -> tuple[Tensor, int | None]:
    (dim,) = in_dims
    if dim is None:
        return descending_ranks(keys), None
    return descending_ranks(keys.movedim(dim, 0)), 0
