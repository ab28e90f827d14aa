import pytest
import torch

from idspn.sorting import argsort_descending, rank_descending


def _with_ties(shape, dtype):
    x = torch.randn(*shape, dtype=dtype)
    x[0, :3, 0] = 1.5
    x[1, 2:6, -1] = -0.25
    x[-1, 0, :4] = 0.0
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_argsort_sorts_descending(dtype, dim):
    x = _with_ties((5, 7, 9), dtype)
    expected = torch.sort(x, dim=dim, descending=True).values
    assert torch.equal(x.gather(dim, argsort_descending(x, dim=dim)), expected)


@pytest.mark.parametrize("n", [1, 2, 8, 17, 64])
@pytest.mark.parametrize("dim", [1, -1])
def test_rank_is_the_inverse_of_a_descending_sort(n, dim):
    x = _with_ties((4, n, 6) if dim == 1 else (4, 6, n), torch.float32)
    rank = rank_descending(x, dim=dim)
    assert torch.equal(rank.sort(dim=dim).values, torch.arange(n).view([1, -1, 1] if dim == 1 else [1, 1, -1]).expand_as(x))
    placed = torch.empty_like(x).scatter_(dim, rank, x)  # element of rank r goes to position r
    assert torch.equal(placed, torch.sort(x, dim=dim, descending=True).values)


def test_argsort_handles_infinities_and_extremes():
    x = torch.tensor([[3.0, float("-inf"), -1e38, 1e38, float("inf"), -0.5, 2e-45]])
    assert argsort_descending(x, dim=1).tolist() == [[4, 3, 0, 6, 5, 2, 1]]


def test_sorting_does_not_modify_input():
    x = torch.randn(4, 20, 3)
    before = x.clone()
    argsort_descending(x, dim=1)
    rank_descending(x, dim=1)
    rank_descending(x[:, :5], dim=1)
    assert torch.equal(x, before)
