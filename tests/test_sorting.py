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
