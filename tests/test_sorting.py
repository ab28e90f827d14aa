import pytest
import torch

from idspn.sorting import argsort_descending


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


def test_sorting_does_not_modify_input():
    x = torch.randn(4, 20, 3)
    before = x.clone()
    argsort_descending(x, dim=1)
    assert torch.equal(x, before)
