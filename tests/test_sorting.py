import pytest
import torch

from idspn import sorting
from idspn.sorting import argsort_descending, descending_ranks, lookup_by_rank


def _with_ties(shape, dtype):
    x = torch.randn(*shape, dtype=dtype)
    x[0, :3, 0] = 1.5
    x[1, 2:6, -1] = -0.25
    x[-1, 0, :4] = 0.0
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_argsort_is_a_stable_descending_sort(dtype, dim):
    x = _with_ties((5, 7, 9), dtype)
    expected = torch.sort(x, dim=dim, descending=True, stable=True).indices
    assert torch.equal(argsort_descending(x, dim=dim), expected)


def test_argsort_handles_infinities_and_extremes():
    x = torch.tensor([[3.0, float("-inf"), -1e38, 1e38, float("inf"), -0.5, 2e-45]])
    assert argsort_descending(x, dim=1).tolist() == [[4, 3, 0, 6, 5, 2, 1]]


@pytest.mark.parametrize("n", [5, 20, 40])
def test_negative_and_positive_zero_are_a_tie(n):
    # -0.0 == 0.0: ranked by position, as torch.sort ranks them (counted, packed and bucketed paths)
    x = torch.randn(2, n)
    x[0, 1], x[0, 3] = -0.0, 0.0
    x[1, 1], x[1, 3] = 0.0, -0.0
    expected = torch.sort(x, dim=1, descending=True, stable=True).indices
    assert torch.equal(argsort_descending(x, dim=1), expected)
    ranks = descending_ranks(x, dim=1)
    assert (ranks[:, 1] < ranks[:, 3]).all()  # the earlier zero first, whichever its sign


def test_sorting_does_not_modify_input():
    x = torch.randn(4, 20, 3)
    before = x.clone()
    argsort_descending(x, dim=1)
    assert torch.equal(x, before)


@pytest.mark.parametrize("n", [31, 32, 64, 100])
def test_long_rows_with_ties_and_near_ties_sort_exactly(n):
    # Rows of 32 or more go through 32-bit bucketed keys; values one bucket apart, equal values and
    # infinities must still come out in the exact stable order.
    torch.manual_seed(n)
    x = torch.randn(300, n)
    x[::3, 1] = x[::3, 0]  # exact ties
    x[1::3, 2] = x[1::3, 0] * (1 + 2**-20)  # distinct values that share a bucket
    x[2::3, 5] = x[2::3, 7] * (1 - 2**-21)
    x[::11, n // 2] = float("inf")
    x[::13, n // 3] = float("-inf")
    expected = torch.sort(x, dim=1, descending=True, stable=True).indices
    assert torch.equal(argsort_descending(x, dim=1), expected)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_sort_equals_single_threaded(threads):
    before = torch.get_num_threads()
    x = torch.randn(64, 40, 130)
    x[:, 3] = x[:, 9]
    try:
        torch.set_num_threads(threads)
        result = argsort_descending(x, dim=1)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(result, torch.sort(x, dim=1, descending=True, stable=True).indices)


def test_sort_follows_the_memory_layout_of_its_input():
    # A (B, N, L) view of (L, B, N) memory is sorted without a copy and answered in that layout.
    memory = torch.randn(6, 4, 9)  # (L, B, N)
    x = memory.permute(1, 2, 0)  # (B, N, L)
    result = argsort_descending(x, dim=1)
    assert result.permute(2, 0, 1).is_contiguous()
    assert torch.equal(result, torch.sort(x, dim=1, descending=True, stable=True).indices)


@pytest.mark.parametrize("n", [1, 5, 16, 17, 40])
@pytest.mark.parametrize("layout", ["contiguous", "set-outermost", "set-innermost"])
def test_ranks_are_the_inverse_of_the_stable_sort(n, layout):
    # Counted ranks (n <= 16) and inverted sorts (n > 16), for every memory layout of (B, N, L).
    memory_order = {"contiguous": (0, 1, 2), "set-outermost": (1, 0, 2), "set-innermost": (2, 0, 1)}[layout]
    shape = (6, n, 33)
    memory = torch.randn(*[shape[d] for d in memory_order])
    x = memory.permute([memory_order.index(d) for d in range(3)])  # (B, N, L) view
    if n > 2:
        x[:, 2] = x[:, 0]
    perm = torch.sort(x, dim=1, descending=True, stable=True).indices
    expected = torch.empty_like(perm).scatter_(1, perm, torch.arange(n).view(1, n, 1).expand_as(perm))
    ranks = descending_ranks(x, dim=1)
    assert ranks.dtype == torch.long
    assert torch.equal(ranks, expected)


@pytest.mark.parametrize("n, dtype", [(64, torch.float64), (100, torch.float32), (40000, torch.float32)])
def test_ranks_of_long_rows_with_near_ties_over_threads(n, dtype):
    # float64 sorts with NumPy's argsort; float32 through bucketed keys, repaired where values share
    # a bucket; 40,000 positions do not fit two to a 32-bit key (inverted by argsort instead)
    torch.manual_seed(n)
    x = torch.randn(800, n, 2, dtype=dtype) if n < 1000 else torch.randn(3, n, 2, dtype=dtype)
    x[:, 7] = x[:, 1]
    x[::2, 2] = x[::2, 0] * (1 + 2**-20)  # distinct values that share a bucket
    x[1::2, 5] = x[1::2, 9] * (1 - 2**-21)
    perm = torch.sort(x, dim=1, descending=True, stable=True).indices
    expected = torch.empty_like(perm).scatter_(1, perm, torch.arange(n).view(1, n, 1).expand_as(perm))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        ranks = descending_ranks(x, dim=1)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(ranks, expected)


def _lookup_reference(x, table, dim=1):
    perm = torch.sort(x, dim=dim, descending=True, stable=True).indices  # independent of our sorts
    n = x.shape[dim]
    shape = [n if d == dim else 1 for d in range(x.dim())]
    ranks = torch.empty_like(perm).scatter_(dim, perm, torch.arange(n).view(shape).expand_as(perm))
    return torch.gather(table.expand_as(x), dim, ranks)


@pytest.mark.parametrize("n", [5, 20, 40, 64])
@pytest.mark.parametrize("layout", ["contiguous", "set-innermost"])
@pytest.mark.parametrize("table_shape", ["per-feature", "per-set", "per-element"])
def test_lookup_by_rank_is_the_table_at_each_rank(n, layout, table_shape):
    # The fused path (n >= 17 on CPU float32, no grad) and the counted one, with ties and +-0.
    torch.manual_seed(n)
    memory_order = {"contiguous": (0, 1, 2), "set-innermost": (2, 0, 1)}[layout]
    shape = (40, n, 33)
    x = torch.randn(*[shape[d] for d in memory_order]).permute([memory_order.index(d) for d in range(3)])
    x[:, 2] = x[:, 0]
    x[::2, 3] = x[::2, 1] * (1 + 2**-20)  # distinct values that share a bucket
    x[:5, 1], x[:5, 4] = -0.0, 0.0
    table = torch.randn({"per-feature": (1, n, 33), "per-set": (40, n, 1), "per-element": (40, n, 33)}[table_shape])
    with torch.no_grad():
        result = lookup_by_rank(x, table, dim=1)
    assert torch.equal(result, _lookup_reference(x, table))


def test_lookup_by_rank_is_differentiable_in_the_table_only():
    x = torch.randn(4, 40, 6, requires_grad=True)
    table = torch.randn(1, 40, 6, requires_grad=True)
    out = lookup_by_rank(x, table, dim=1)
    assert torch.equal(out, _lookup_reference(x.detach(), table.detach()))
    v = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, table, v)
    (expected,) = torch.autograd.grad(_lookup_reference(x.detach(), table), table, v)
    assert torch.allclose(grad, expected)
    with torch.no_grad():
        assert torch.equal(lookup_by_rank(x, table, dim=1), out.detach())


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_lookup_equals_the_reference_and_survives_nan(threads):
    before = torch.get_num_threads()
    x = torch.randn(70, 50, 64).permute(0, 2, 1)  # (B, N, L) with N innermost in memory
    x[:, 7] = x[:, 3]
    table = torch.randn(1, 64, 50)
    try:
        torch.set_num_threads(threads)
        result = lookup_by_rank(x, table, dim=1)
        with_nan = lookup_by_rank(torch.where(torch.rand_like(x) < 0.01, float("nan"), x), table, dim=1)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(result, _lookup_reference(x, table))
    # NaN gives an arbitrary order, but still every entry of the table exactly once per row
    assert torch.equal(with_nan.sort(dim=1).values, table.expand_as(x).sort(dim=1).values)


@pytest.mark.parametrize("shape, dim, table_shape", [
    ((40,), 0, (40,)),
    ((3, 40), -1, (1, 40)),
    ((40, 5), 0, (40, 5)),
    ((2, 3, 40, 4), 2, (1, 3, 40, 1)),
    ((2, 3, 40, 4), 2, (2, 1, 40, 4)),
])
def test_lookup_by_rank_in_any_number_of_dims(shape, dim, table_shape):
    torch.manual_seed(len(shape))
    x = torch.randn(shape)
    table = torch.randn(table_shape[::-1]).permute(*reversed(range(len(table_shape))))  # not contiguous
    with torch.no_grad():
        assert torch.equal(lookup_by_rank(x, table, dim=dim), _lookup_reference(x, table, dim=dim % x.dim()))


def test_lookup_by_rank_over_many_blocks(monkeypatch):
    # Small blocks: every thread's span is ranked block by block, each with its rows of the table.
    monkeypatch.setattr(sorting, "_BLOCK_ELEMENTS", 300)
    x = torch.randn(9, 6, 40).permute(0, 2, 1)  # (B, N, L) with N innermost in memory
    x[:, 4] = x[:, 2]
    for table in (torch.randn(9, 40, 6), torch.randn(1, 40, 6), torch.randn(9, 40, 1)):
        with torch.no_grad():
            assert torch.equal(lookup_by_rank(x, table, dim=1), _lookup_reference(x, table))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # inside torch's forward AD
def test_lookup_by_rank_keeps_a_forward_mode_tangent():
    import torch.autograd.forward_ad as fwAD

    x = torch.randn(3, 40, 2)
    table, tangent = torch.randn(1, 40, 2), torch.randn(1, 40, 2)
    with torch.no_grad(), fwAD.dual_level():
        out = lookup_by_rank(x, fwAD.make_dual(table, tangent), dim=1)
        result_tangent = fwAD.unpack_dual(out).tangent
    assert result_tangent is not None
    assert torch.equal(result_tangent, _lookup_reference(x, tangent))


def test_lookup_by_rank_rejects_a_table_of_the_wrong_shape():
    with pytest.raises(ValueError, match="table"):
        lookup_by_rank(torch.randn(2, 40, 3), torch.randn(1, 39, 3), dim=1)
    with pytest.raises(ValueError, match="table"):
        lookup_by_rank(torch.randn(2, 40, 3), torch.randn(40, 3), dim=1)
    with pytest.raises(ValueError, match="broadcastable"):
        lookup_by_rank(torch.randn(1, 40, 3), torch.randn(2, 40, 3), dim=1)  # would be cut to 1 row
    with pytest.raises(ValueError, match="table"):
        lookup_by_rank(torch.randn(2, 40, 3), torch.randint(0, 3, (1, 40, 3)), dim=1)
