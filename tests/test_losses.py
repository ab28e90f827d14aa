import itertools

import pytest
import torch
import torch.nn.functional as F

from idspn import hungarian_loss, hungarian_match


def _brute_force_loss(pred, target, elementwise):
    n = pred.shape[0]
    return min(elementwise(pred, target[list(p)]).mean().item() for p in itertools.permutations(range(n)))


@pytest.mark.parametrize(
    "pairwise,elementwise",
    [
        ("mse", lambda p, t: (p - t).pow(2).mean(-1)),
        ("huber", lambda p, t: F.smooth_l1_loss(p, t, reduction="none").mean(-1)),
        ("cross_entropy", lambda p, t: -(t * p.log_softmax(-1)).sum(-1)),
    ],
)
def test_hungarian_loss_is_the_minimum_over_permutations(pairwise, elementwise):
    pred = torch.randn(6, 4, 3) * 2
    target = torch.randn(6, 4, 3) * 2
    if pairwise == "cross_entropy":
        target = F.one_hot(torch.randint(0, 3, (6, 4)), 3).float()
    loss = hungarian_loss(pred, target, pairwise)
    expected = sum(_brute_force_loss(pred[b], target[b], elementwise) for b in range(6)) / 6
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_loss_is_invariant_to_permutations_and_zero_at_equality():
    pred = torch.randn(3, 5, 2)
    target = torch.randn(3, 5, 2)
    perm = torch.randperm(5)
    assert hungarian_loss(pred[:, perm], target).item() == pytest.approx(hungarian_loss(pred, target).item())
    assert hungarian_loss(target[:, perm], target).item() == 0.0


def test_duplicate_predictions_are_matched_to_different_targets():
    pred = torch.zeros(1, 2, 1)
    target = torch.tensor([[[-1.0], [1.0]]])
    index = hungarian_match(pred, target)
    assert sorted(index[0].tolist()) == [0, 1]


def test_gradient_flows_through_matched_pairs_only():
    pred = torch.tensor([[[0.0], [10.0]]], requires_grad=True)
    target = torch.tensor([[[10.0], [1.0]]])
    hungarian_loss(pred, target).backward()
    # pred 0 is matched to target 1 and pred 1 to target 0: grad = 2 * (p - t) / (N * D)
    assert torch.allclose(pred.grad, torch.tensor([[[-1.0], [0.0]]]))


def test_groups_restrict_matching():
    pred = torch.tensor([[[0.0], [1.0]]])
    target = torch.tensor([[[0.0], [1.0]]])
    groups_pred = torch.tensor([[0, 1]])
    groups_target = torch.tensor([[1, 0]])  # the close pairs are in different groups
    assert hungarian_match(pred, target, pred_groups=groups_pred, target_groups=groups_target)[0].tolist() == [1, 0]
    assert hungarian_loss(pred, target, pred_groups=groups_pred, target_groups=groups_target).item() == pytest.approx(
        1.0
    )


def test_mask_ignores_padding():
    pred = torch.tensor([[[0.0], [1.0], [99.0]]])
    target = torch.tensor([[[1.0], [0.0], [-50.0]]])
    mask = torch.tensor([[True, True, False]])
    assert hungarian_loss(pred, target, mask=mask).item() == 0.0
    index = hungarian_match(pred, target, mask=mask)
    assert index[0].tolist() == [1, 0, 2]


def test_reduction_none_gives_every_matched_pair_and_zero_for_padding():
    pred = torch.tensor([[[0.0], [1.0], [99.0]], [[2.0], [5.0], [0.0]]])
    target = torch.tensor([[[1.0], [0.5], [-50.0]], [[5.0], [0.0], [3.0]]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    losses = hungarian_loss(pred, target, mask=mask, reduction="none")  # (B, N)
    assert losses.tolist() == [[0.25, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert hungarian_loss(pred, target, mask=mask).item() == pytest.approx(1.25 / 5)


def test_bad_arguments_raise():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="pairwise"):
        hungarian_loss(x, x, "l3")
    with pytest.raises(ValueError, match="reduction"):
        hungarian_loss(x, x, reduction="sum")
    with pytest.raises(ValueError, match="same shape"):
        hungarian_loss(x, torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        hungarian_loss(x[0], x[0])
    with pytest.raises(ValueError, match="non-empty"):
        hungarian_loss(torch.randn(2, 0, 4), torch.randn(2, 0, 4))
    with pytest.raises(ValueError, match="mask"):
        hungarian_loss(x, x, mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="together"):
        hungarian_loss(x, x, pred_groups=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="mask must be a bool tensor .* got a list"):
        hungarian_loss(x, x, mask=[[True] * 3] * 2)
    groups = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="pred_groups must be an integer tensor .* got a list"):
        hungarian_loss(x, x, pred_groups=[[0] * 3] * 2, target_groups=groups)


@pytest.mark.parametrize("padding", [float("inf"), -float("inf"), float("nan"), 1e20, -1e30])
@pytest.mark.parametrize("pairwise", ["mse", "huber", "cross_entropy"])
def test_padding_values_do_not_matter_under_a_mask(padding, pairwise):
    torch.manual_seed(0)
    pred, target = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    expected = hungarian_loss(pred, target, pairwise, mask=mask)
    bad_pred, bad_target = pred.clone(), target.clone()
    bad_pred[~mask], bad_target[~mask] = padding, padding
    bad_pred.requires_grad_()
    loss = hungarian_loss(bad_pred, bad_target, pairwise, mask=mask)
    assert torch.isfinite(loss) and torch.allclose(loss, expected)
    loss.backward()
    assert torch.isfinite(bad_pred.grad).all() and (bad_pred.grad[~mask] == 0).all()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_present_elements_are_named_as_such(value):
    pred, target = torch.randn(2, 3, 2), torch.randn(2, 3, 2)
    pred[1, 2, 0] = value
    with pytest.raises(ValueError, match="pred contains NaN or inf"):
        hungarian_loss(pred, target)


def test_huge_but_finite_values_still_match():
    pred = torch.tensor([[[1e20], [-1e20]]])
    target = torch.tensor([[[-1e20], [1e20]]])
    assert hungarian_match(pred, target).tolist() == [[1, 0]]  # the cost is float64: no overflow


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pairwise", ["mse", "huber", "cross_entropy"])
def test_half_precision_inputs_on_cpu(dtype, pairwise):
    torch.manual_seed(0)
    pred, target = torch.randn(4, 6, 5), torch.randn(4, 6, 5)
    if pairwise == "cross_entropy":
        target = F.one_hot(torch.randint(0, 5, (4, 6)), 5).float()
    full = hungarian_loss(pred, target, pairwise)
    half = hungarian_loss(pred.to(dtype), target.to(dtype), pairwise)
    assert half.dtype == dtype and torch.allclose(half.float(), full, rtol=3e-2, atol=3e-2)


def test_inputs_of_different_dtypes_get_one_message():
    with pytest.raises(ValueError, match="same dtype, got torch.float32 and torch.float64"):
        hungarian_loss(torch.randn(2, 3, 2), torch.randn(2, 3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="meta tensor"):
        hungarian_loss(torch.randn(2, 3, 2, device="meta"), torch.randn(2, 3, 2, device="meta"))
