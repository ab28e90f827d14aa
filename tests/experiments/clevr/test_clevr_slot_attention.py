"""Slot Attention and Slot MLP baselines (Locatello et al., 2020)."""

import torch

from idspn_experiments.clevr.slot_attention import SlotAttention, SlotAttentionPredictor, SlotHead, SlotMLPPredictor


def test_slot_attention_is_permutation_equivariant_in_its_slots():
    torch.manual_seed(0)
    module = SlotAttention(num_slots=5, input_dim=16, slot_dim=8, iters=3, hidden_dim=32).double()
    inputs = torch.randn(2, 30, 16, dtype=torch.double)  # (B, M, C)
    slots = torch.randn(2, 5, 8, dtype=torch.double)  # (B, K, S)
    perm = torch.tensor([3, 0, 4, 1, 2])
    out = module(inputs, slots)
    out_perm = module(inputs, slots[:, perm])
    assert len(out) == 3
    for a, b in zip(out, out_perm, strict=True):
        torch.testing.assert_close(b, a[:, perm])


def test_slot_attention_ignores_the_order_of_its_inputs():
    torch.manual_seed(0)
    module = SlotAttention(num_slots=4, input_dim=6, slot_dim=8).double()
    inputs = torch.randn(1, 12, 6, dtype=torch.double)
    slots = torch.randn(1, 4, 8, dtype=torch.double)
    torch.testing.assert_close(module(inputs[:, torch.randperm(12)], slots)[-1], module(inputs, slots)[-1])


def test_predictors_give_the_prediction_of_every_iteration_and_bounded_outputs():
    model = SlotAttentionPredictor(32, 10, 19, coord_range="-3..3", iters=3)
    images = torch.rand(2, 3, 32, 32)
    torch.manual_seed(0)  # the slots start from a random draw
    all_iters = model(images, all_iters=True)
    torch.manual_seed(0)
    last = model(images)
    assert all_iters.shape == (3, 2, 10, 19) and last.shape == (2, 10, 19)
    torch.testing.assert_close(all_iters[-1], last)
    coords, rest = all_iters[..., :3], all_iters[..., 3:]
    assert coords.min() >= -3 and coords.max() <= 3 and rest.min() >= 0 and rest.max() <= 1
    assert SlotMLPPredictor(32, 10, 19, pool=4)(torch.rand(2, 3, 32, 32)).shape == (2, 10, 19)


def test_head_maps_the_sigmoid_onto_the_coordinate_range():
    head = SlotHead(4, 19, "-1..1")
    with torch.no_grad():
        head.mlp[-1].weight.zero_()
        head.mlp[-1].bias.fill_(-50.0)  # sigmoid = 0: the bottom of every range
    out = head(torch.randn(1, 2, 4))
    assert out[..., :3].eq(-1).all() and out[..., 3:].abs().max() < 1e-6
