import numpy as np
import pytest
import torch

from idspn import IDSPN, Equivariance, FSEncoder, classify_equivariance, push_apart
from idspn.equivariance import _multiset_match


def test_push_apart_matches_eq_1():
    x = torch.tensor([[1.0, 2.0], [2.0, 1.0], [0.0, 0.0]])
    assert push_apart(x).tolist() == [[0.0, 3.0], [3.0, 0.0], [-1.0, 1.0]]
    with pytest.raises(ValueError):
        push_apart(torch.zeros(3))


def test_push_apart_is_x_plus_the_gradient_of_sorting_appendix_a1():
    x = torch.randn(100, 2)
    x[:10, 1] = x[:10, 0]  # ties
    leaf = x.clone().requires_grad_()
    g = (torch.sort(leaf, dim=-1, stable=True).values * torch.tensor([-1.0, 1.0])).sum()
    (grad,) = torch.autograd.grad(g, leaf)
    assert torch.equal(push_apart(x), x + grad)


def _decoder_as_function(pooling):
    torch.manual_seed(0)
    enc = FSEncoder(set_dim=3, hidden_dim=16, latent_dim=8, pooling=pooling).double()
    dec = IDSPN(enc, set_size=6, set_dim=3, iters=5, momentum=0.9).double()
    z = torch.randn(1, 8, dtype=torch.float64)
    return lambda y0: dec(z, init_set=y0.unsqueeze(0))[0].detach()


def _sort_jacobian(x):
    """f(X) = S_X^T w: the Jacobian of sorting applied to a fixed vector (Appendix A)."""
    leaf = x.detach().requires_grad_()
    w = torch.arange(x.shape[0], dtype=x.dtype).unsqueeze(1)
    (g,) = torch.autograd.grad((torch.sort(leaf, dim=0, stable=True).values * w).sum(), leaf)
    return g


def _mlp():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    return lambda x: net(x)


@pytest.mark.parametrize(
    "name,f,set_dim,expected",
    [
        ("iDSPN with FSPool", _decoder_as_function("fspool"), 3, Equivariance.EXCLUSIVELY_MULTISET),
        ("iDSPN with sum pooling", _decoder_as_function("sum"), 3, Equivariance.SET),
        ("Jacobian of sorting", _sort_jacobian, 1, Equivariance.EXCLUSIVELY_MULTISET),
        ("elementwise MLP", _mlp(), 3, Equivariance.SET),
        ("push_apart", lambda x: push_apart(x.T).T, 1, Equivariance.EXCLUSIVELY_MULTISET),
        ("cumulative sum", lambda x: x.cumsum(0), 2, Equivariance.NONE),
        ("positional offset", lambda x: x + torch.arange(x.shape[0], dtype=x.dtype).unsqueeze(1), 2, Equivariance.NONE),
    ],
)
def test_classify_equivariance(name, f, set_dim, expected):
    set_size = 2 if name == "push_apart" else 6
    assert classify_equivariance(f, set_size=set_size, set_dim=set_dim) is expected, name


def test_classify_rejects_bad_arguments():
    with pytest.raises(ValueError, match="set_size"):
        classify_equivariance(lambda x: x, set_size=1)
    with pytest.raises(ValueError, match="trials"):
        classify_equivariance(lambda x: x, trials=0)
    with pytest.raises(ValueError, match="output"):
        classify_equivariance(lambda x: x.sum(0), set_size=3)
    with pytest.raises(ValueError, match="f returned NaN or inf"):
        classify_equivariance(lambda x: x / 0.0)


def test_multiset_match_needs_some_matching_within_atol_not_the_cheapest_one():
    # Two equal inputs whose outputs are within atol of each other's only when crossed: the matching
    # of least total difference pairs them straight, one pair of which is further apart than atol.
    t = 1e-5
    out = np.array([[0.0, 0.0], [t, 0.0]])
    out_perm = np.array([[0.0, 0.0], [-0.5 * t, t]])
    assert _multiset_match(out_perm, out, np.array([0, 1]), [np.array([0, 1])], atol=t)
    assert not _multiset_match(out_perm, out, np.array([0, 1]), [np.array([0, 1])], atol=t / 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_classify_in_half_precision(dtype):
    assert classify_equivariance(lambda x: x * 2, set_size=4, set_dim=3, dtype=dtype) is Equivariance.SET
    assert classify_equivariance(lambda x: x.cumsum(0), set_size=4, set_dim=3, dtype=dtype) is Equivariance.NONE
