import pytest
import torch

from idspn_experiments.numbering.data import (
    NumberingDataset,
    class_ids,
    make_numbering,
    one_hot_batch,
    permute_elements,
)


def test_ids_count_up_within_each_class():
    # [a, a, b, b, b] -> [(a, 0), (a, 1), (b, 0), (b, 1), (b, 2)]; interleaved too
    assert class_ids(torch.tensor([[0, 0, 1, 1, 1]])).tolist() == [[0, 1, 0, 1, 2]]
    assert class_ids(torch.tensor([[2, 0, 2, 1, 0, 2]])).tolist() == [[0, 0, 1, 0, 1, 2]]


@pytest.mark.parametrize("classes", [4, 8])
def test_targets_are_per_class_ranges_and_classes_uniform(classes):
    labels, ids = make_numbering(2000, 16, classes, seed=0, split="train")
    assert labels.shape == ids.shape == (2000, 16) and labels.min() >= 0 and labels.max() < classes
    for b in range(50):
        for c in range(classes):
            members = ids[b][labels[b] == c]
            assert members.tolist() == list(range(len(members)))  # 0..count-1 in input order
    counts = torch.bincount(labels.flatten(), minlength=classes).float() / labels.numel()
    assert torch.allclose(counts, torch.full((classes,), 1 / classes), atol=0.01)  # i.i.d. uniform classes


def test_splits_are_regenerated_from_the_seed():
    a = make_numbering(100, 8, 4, seed=3, split="test")
    assert all(torch.equal(x, y) for x, y in zip(a, make_numbering(100, 8, 4, seed=3, split="test"), strict=True))
    assert not torch.equal(a[0], make_numbering(100, 8, 4, seed=4, split="test")[0])
    assert not torch.equal(a[0], make_numbering(100, 8, 4, seed=3, split="val")[0])
    torch.manual_seed(0)
    x = make_numbering(10, 8, 4, seed=3, split="train")[0]
    torch.manual_seed(1)
    assert torch.equal(x, make_numbering(10, 8, 4, seed=3, split="train")[0])  # global RNG plays no part
    with pytest.raises(ValueError, match="split"):
        make_numbering(10, 8, 4, seed=0, split="dev")


def test_one_hot_batch_and_permutation_keep_elements_paired():
    data = NumberingDataset(6, 10, 4, seed=0, split="train")
    batch = {"classes": data.classes, "ids": data.ids}
    inputs, targets, labels = one_hot_batch(batch, 4)
    assert inputs.shape == (6, 10, 4) and targets.shape == (6, 10, 10) and torch.equal(labels, data.classes)
    assert torch.equal(inputs.argmax(-1), data.classes) and torch.equal(targets.argmax(-1), data.ids)
    permuted = permute_elements(batch)

    def pairs(b):
        return sorted(zip(b["classes"][0].tolist(), b["ids"][0].tolist(), strict=True))

    assert pairs(permuted) == pairs(batch) and not torch.equal(permuted["classes"], batch["classes"])
