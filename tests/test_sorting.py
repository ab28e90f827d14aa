import pytest
import torch

from idspn.sorting import argsort_descending


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_argsort_matches_stable_torch_sort(dtype, dim):
    x = torch.randn(5, 7, 9, dtype=dtype)
    x[0, :3, 0] = 1.5  # ties
    x[1, 2:6, 3] = -0.25
    x[2, 0, :4] = 0.0
    expected = torch.sort(x, dim=dim, descending=True, stable=True).indices
    got = argsort_descending(x, dim=dim)
    assert torch.equal(x.gather(dim, got), x.gather(dim, expected))
    assert torch.equal(got, expected) or dtype == torch.float32  # float32 may order -0.0/0.0 either way


def test_argsort_handles_infinities_and_extremes():
    x = torch.tensor([[3.0, float("-inf"), -1e38, 1e38, float("inf"), -0.5, 2e-45]])
    got = argsort_descending(x, dim=1)
    assert got.tolist() == [[4, 3, 0, 6, 5, 2, 1]]


def test_argsort_does_not_modify_input():
    x = torch.randn(4, 8, 3)
    before = x.clone()
    argsort_descending(x, dim=1)
    assert torch.equal(x, before)
