import pytest
import torch

from idspn import project_simplex
from idspn.ranking import SORT_BACKENDS, use_sort_backend


def test_projection_lies_on_simplex_and_is_idempotent():
    x = torch.randn(64, 10) * 3
    p = project_simplex(x)
    assert (p >= 0).all()
    assert torch.allclose(p.sum(-1), torch.ones(64), atol=1e-5)
    assert torch.allclose(project_simplex(p), p, atol=1e-6)


def test_projection_is_the_closest_point():
    # the projection is no farther from x than any other point of the simplex
    x = torch.randn(32, 5, dtype=torch.float64)
    p = project_simplex(x)
    others = torch.distributions.Dirichlet(torch.ones(5, dtype=torch.float64)).sample((32, 200))  # (32, 200, 5)
    d_p = (x - p).norm(dim=-1)
    d_o = (x.unsqueeze(1) - others).norm(dim=-1)
    assert (d_p.unsqueeze(1) <= d_o + 1e-12).all()


def _reference_projection(x):
    desc = torch.sort(x, dim=-1, descending=True).values
    cumsum = desc.cumsum(-1) - 1
    size = (desc - cumsum / torch.arange(1, x.shape[-1] + 1) > 0).sum(-1, keepdim=True)
    return (x - cumsum.gather(-1, size - 1) / size).clamp(min=0)


@pytest.mark.parametrize("backend", SORT_BACKENDS)
def test_projection_of_many_rows_matches_the_sorted_threshold_eager_and_compiled(backend):
    x = torch.randn(16, 50, 64) * 0.3
    x[0, 0, :4] = x[0, 0, 4]  # ties
    expected = _reference_projection(x)
    with use_sort_backend(backend):
        eager = project_simplex(x)
        compiled = torch.compile(project_simplex, fullgraph=True)(x)  # the pairwise-sum support
    for p in (eager, compiled):
        assert torch.allclose(p, expected, atol=1e-6)
        assert torch.allclose(p.sum(-1), torch.ones(16, 50), atol=1e-5)
        assert not p.signbit().any()  # clipped entries are +0.0, not -0.0


def test_compiled_projection_has_the_eager_gradient():
    x = torch.randn(8, 5, 12, dtype=torch.float64, requires_grad=True)
    v = torch.randn(8, 5, 12, dtype=torch.float64)
    (eager,) = torch.autograd.grad((project_simplex(x) * v).sum(), x)
    compiled = torch.compile(project_simplex, fullgraph=True)  # float masks instead of clamp
    (got,) = torch.autograd.grad((compiled(x) * v).sum(), x)
    assert torch.allclose(got, eager)


def test_projection_gradient_matches_finite_differences():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(project_simplex, (x,))


def test_projection_for_a_backward_pass_keeps_a_mask_not_the_sort_order():
    # The backward form (support mask) and the forward-mode form (gather of the sorted entries)
    # give the same values and derivatives; the backward form keeps no integer tensor of x's size.
    x = torch.randn(6, 9, 16, dtype=torch.float64)
    x[0, 0, :3] = x[0, 0, 3]  # ties inside the support
    v = torch.randn_like(x)
    leaf = x.clone().requires_grad_()
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append((t.dtype, t.shape)) or t, lambda t: t):
        p = project_simplex(leaf)
    assert kept and all(dtype.is_floating_point or dtype == torch.bool for dtype, shape in kept if shape == x.shape)
    assert (torch.bool, x.shape) in kept
    (grad,) = torch.autograd.grad((p * v).sum(), leaf)
    assert torch.equal(p.detach(), project_simplex(x))  # no autograd: the gather form
    jvp_value, jvp_tangent = torch.func.jvp(project_simplex, (x,), (v,))
    assert torch.equal(jvp_value, p.detach())
    # <grad of <p, v>, v> is the directional derivative <J v, v> (J is symmetric)
    assert torch.allclose((grad * v).sum(), (jvp_tangent * v).sum())


def test_projection_rejects_bad_input():
    with pytest.raises(ValueError):
        project_simplex(torch.tensor(1.0))
    with pytest.raises(ValueError):
        project_simplex(torch.ones(3, 4, dtype=torch.long))


def test_projection_passes_nan_rows_through_without_failing():
    # A diverged inner loop must reach the decoder's finiteness check, not fail inside the projection.
    x = torch.randn(4, 40)
    x[1, 5] = float("nan")
    x[2] = float("nan")
    p = project_simplex(x)
    assert p[1].isnan().any() and p[2].isnan().all()
    assert torch.allclose(p[[0, 3]].sum(-1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_projects_large_entries_onto_the_simplex(dtype):
    x = torch.tensor([[300.0, 0.0], [5000.0, 1.0], [0.25, 0.5]], dtype=dtype)
    p = project_simplex(x)
    assert p.dtype == dtype
    torch.testing.assert_close(p.float(), project_simplex(x.float()))
    torch.testing.assert_close(p[:2].float(), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


@pytest.mark.parametrize("compile", [False, True])
def test_minus_infinity_entries_project_to_zero(compile):
    project = torch.compile(project_simplex, fullgraph=True) if compile else project_simplex
    x = torch.tensor([[-float("inf"), 0.3, 0.1], [0.2, -float("inf"), -float("inf")]])
    torch.testing.assert_close(project(x), torch.tensor([[0.0, 0.6, 0.4], [1.0, 0.0, 0.0]]))


def test_the_sorted_support_is_never_empty_whatever_the_rounding():
    from idspn.projections import _threshold_by_sorting

    # float32 rounds 1e8 - 1 to 1e8: compared with that threshold, no entry would be above it, and
    # a support of size 0 would index the sum of "the 0 largest" at -1 (the last entry)
    x = torch.tensor([[1e8, 0.0], [0.3, 0.1]])
    torch.testing.assert_close(_threshold_by_sorting(x), torch.tensor([[1e8 - 1], [(0.4 - 1) / 2]]))


def test_equal_entries_stay_together_in_the_support_whatever_the_rounding():
    # float32 rounding of the running sums puts the support boundary between equal entries here:
    # the 6th of 8 sorted entries ties with the 7th and 8th. All three must be in or out together,
    # so that swapping two equal inputs swaps their outputs' gradients and changes no other's.
    x = torch.tensor([-1074.1155, -1073.3068, -1074.0677, -1074.0677, -1074.0677, -1074.1155, -1074.1155, -1074.0677])
    jac = torch.autograd.functional.jacobian(project_simplex, x)  # (K, K): [output, input]
    k = len(x)
    for i in range(k):
        for j in range(k):
            if i != j and x[i] == x[j]:
                others = [m for m in range(k) if m not in (i, j)]
                assert torch.equal(jac[others, i], jac[others, j]), (i, j)
