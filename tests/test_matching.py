import itertools

import pytest
import torch

from idspn import batched_assignment


def _brute_force(cost):
    n = cost.shape[0]
    return min(sum(cost[i, p[i]].item() for i in range(n)) for p in itertools.permutations(range(cost.shape[1]), n))


@pytest.mark.parametrize("n,m", [(1, 1), (3, 3), (5, 5), (3, 5)])
def test_batched_assignment_equals_brute_force(n, m):
    cost = torch.rand(16, n, m)
    index = batched_assignment(cost)
    assert index.shape == (16, n)
    for b in range(16):
        assert len(set(index[b].tolist())) == n  # one-to-one
        got = cost[b].gather(1, index[b].unsqueeze(1)).sum().item()
        assert got == pytest.approx(_brute_force(cost[b]), abs=1e-6)


def test_batched_equals_per_sample():
    cost = torch.rand(8, 6, 6)
    batched = batched_assignment(cost)
    for b in range(8):
        assert torch.equal(batched[b], batched_assignment(cost[b : b + 1])[0])


def test_infinite_cost_forbids_pairs():
    cost = torch.zeros(1, 3, 3)
    cost[0, 0, 0] = float("inf")
    cost[0, 1, 1] = float("inf")
    index = batched_assignment(cost)[0].tolist()
    assert index[0] != 0 and index[1] != 1


def test_infeasible_and_bad_costs_raise():
    cost = torch.full((1, 2, 2), float("inf"))
    with pytest.raises(ValueError, match="no assignment"):
        batched_assignment(cost)
    with pytest.raises(ValueError, match="N <= M"):
        batched_assignment(torch.rand(1, 3, 2))
    with pytest.raises(ValueError, match="shape"):
        batched_assignment(torch.rand(3, 2))
    with pytest.raises(ValueError, match="NaN"):
        batched_assignment(torch.tensor([[[float("nan")]]]))
