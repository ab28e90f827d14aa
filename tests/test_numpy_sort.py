import pytest
import torch

from idspn.numpy_sort import descending_order, descending_ranks


def _reference(keys: torch.Tensor) -> torch.Tensor:
    return torch.sort(keys, dim=-1, descending=True, stable=True).indices


def _reference_ranks(keys: torch.Tensor) -> torch.Tensor:
    return _reference(keys).argsort(dim=-1)  # the inverse permutation of the stable order


def _with_ties(shape, dtype=torch.float32):
    """Many exact ties, +0.0 and -0.0, infinities, subnormals and large magnitudes."""
    specials = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-40, -1e-40, 3e38, -3e38])
    x = torch.randint(-2, 3, shape).float()
    pick = torch.randint(0, len(specials), shape)
    x = torch.where(torch.rand(shape) < 0.3, specials[pick], x)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 7, 64, 129])
def test_order_is_torchs_stable_descending_sort(n, dtype):
    keys = _with_ties((5, 3, n), dtype)
    order = descending_order(keys)
    assert order.dtype == torch.long and order.is_contiguous()
    assert torch.equal(order, _reference(keys))
    keys = torch.randn(4, n, dtype=dtype)
    assert torch.equal(descending_order(keys), _reference(keys))


def test_order_of_strided_and_empty_keys():
    keys = _with_ties((6, 40, 3)).transpose(1, 2)  # rows not contiguous
    assert torch.equal(descending_order(keys), _reference(keys))
    assert descending_order(torch.empty(0, 5)).shape == (0, 5)


def test_order_under_vmap_equals_the_batched_call():
    keys = _with_ties((4, 6, 33))
    for dim in (0, 1, 2):  # 2: the batch dim is the sorted one, which becomes dim 1 of the rows
        got = torch.func.vmap(descending_order, in_dims=dim)(keys)
        assert torch.equal(got, _reference(keys.movedim(dim, 0)))
    rows = _with_ties((5, 33))
    got = torch.func.vmap(lambda k, r: descending_order(r) + k, in_dims=(0, None))(torch.arange(3), rows)
    assert torch.equal(got, _reference(rows) + torch.arange(3).view(3, 1, 1))  # unbatched keys


def test_order_compiles_without_a_graph_break():
    keys = _with_ties((3, 50))
    compiled = torch.compile(lambda k: descending_order(k) * 2, fullgraph=True)
    assert torch.equal(compiled(keys), _reference(keys) * 2)


def test_order_meets_the_op_checks_of_torch_library():
    torch.library.opcheck(descending_order, (_with_ties((3, 20)),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 64, 129])
def test_ranks_invert_the_stable_descending_order(n, dtype):
    keys = _with_ties((5, 3, n), dtype)
    ranks = descending_ranks(keys)
    assert ranks.dtype == torch.long and ranks.is_contiguous()
    assert torch.equal(ranks, _reference_ranks(keys))
    order = descending_order(keys)
    assert torch.equal(ranks.gather(-1, order), torch.arange(n).expand_as(order))  # order[rank] = position


def test_ranks_of_strided_and_empty_keys():
    keys = _with_ties((6, 40, 3)).transpose(1, 2)  # rows not contiguous, as FSPool's (B, L, N) view
    assert torch.equal(descending_ranks(keys), _reference_ranks(keys))
    assert descending_ranks(torch.empty(0, 5)).shape == (0, 5)
    assert descending_ranks(torch.empty(3, 0)).shape == (3, 0)


def test_ranks_under_vmap_equal_the_batched_call():
    keys = _with_ties((4, 6, 33))
    for dim in (0, 1, 2):
        got = torch.func.vmap(descending_ranks, in_dims=dim)(keys)
        assert torch.equal(got, _reference_ranks(keys.movedim(dim, 0)))
    rows = _with_ties((5, 33))
    got = torch.func.vmap(lambda k, r: descending_ranks(r) + k, in_dims=(0, None))(torch.arange(3), rows)
    assert torch.equal(got, _reference_ranks(rows) + torch.arange(3).view(3, 1, 1))


def test_ranks_compile_without_a_graph_break():
    keys = _with_ties((3, 50))
    compiled = torch.compile(lambda k: descending_ranks(k) * 2, fullgraph=True)
    assert torch.equal(compiled(keys), _reference_ranks(keys) * 2)


def test_ranks_meet_the_op_checks_of_torch_library():
    torch.library.opcheck(descending_ranks, (_with_ties((3, 20)),))


def test_a_0_dim_key_gets_a_clear_error():
    for op in (descending_order, descending_ranks):
        with pytest.raises(ValueError, match="keys must have at least one dim"):
            op(torch.tensor(1.0))
