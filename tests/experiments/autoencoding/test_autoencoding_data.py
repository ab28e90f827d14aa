import pytest
import torch

from idspn_experiments.autoencoding.data import RandomSets, make_random_sets


def test_splits_are_regenerated_from_the_seed():
    a = make_random_sets(50, 4, 3, seed=7, split="train")
    assert a.shape == (50, 4, 3) and a.dtype == torch.float32
    assert torch.equal(a, make_random_sets(50, 4, 3, seed=7, split="train"))
    assert not torch.equal(a, make_random_sets(50, 4, 3, seed=8, split="train"))  # another seed, another data set
    assert not torch.equal(a, make_random_sets(50, 4, 3, seed=7, split="test"))  # splits are independent draws
    # the draw does not depend on torch's global RNG
    torch.manual_seed(123)
    assert torch.equal(a, make_random_sets(50, 4, 3, seed=7, split="train"))


def test_elements_are_standard_normal():
    x = make_random_sets(4000, 8, 4, seed=0, split="train")
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1) < 0.01


def test_dataset_yields_sets_that_are_input_and_target():
    data = RandomSets(10, 3, 2, seed=0, split="test")
    assert len(data) == 10 and data[4].shape == (3, 2) and torch.equal(data[4], data.sets[4])


@pytest.mark.parametrize(
    "kwargs, match", [({"split": "val"}, "split"), ({"set_size": 0}, "set_size"), ({"num_sets": 2.0}, "num_sets")]
)
def test_bad_arguments_name_themselves(kwargs, match):
    args = {"num_sets": 2, "set_size": 3, "set_dim": 2, "seed": 0, "split": "train", **kwargs}
    with pytest.raises(ValueError, match=match):
        make_random_sets(**args)
