"""Random multisets to autoencode (Section 4.2, Appendix F.2 "Dataset").

Every multiset holds ``set_size`` elements drawn i.i.d. from N(0, I) in ``set_dim`` dimensions.
There is no structure to exploit: a model can only reconstruct a set by storing every element in
its permutation-invariant latent vector. Each split is a pure function of ``(seed, split)``, so a
run regenerates its data instead of loading them, and changing the seed changes the data set.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SPLIT_IDS", "make_random_sets", "RandomSets"]

# Mixed into the seed so that the splits are independent draws; "examples" feeds the Figure 4
# pictures with sets seen neither in training nor in the test split (Appendix G).
SPLIT_IDS = {"train": 0, "test": 1, "examples": 2}


def make_random_sets(num_sets: int, set_size: int, set_dim: int, seed: int, split: str) -> Tensor:
    """Draw one split.

    Args:
        num_sets: number of multisets B.
        set_size: elements per multiset N.
        set_dim: dimension D of every element.
        seed: the run's seed; with ``split`` it fixes the draw.
        split: "train" | "test" | "examples".

    Returns:
        ``(B, N, D)`` float32 tensor of i.i.d. N(0, 1) entries.

    Raises:
        ValueError: for an unknown split or a non-positive size.
    """
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
    for name, value in (("num_sets", num_sets), ("set_size", set_size), ("set_dim", set_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    words = np.random.SeedSequence([seed, SPLIT_IDS[split]]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))
    return torch.randn((num_sets, set_size, set_dim), generator=generator)  # (B, N, D)


class RandomSets(Dataset):
    """One split as a map-style dataset of ``(N, D)`` sets (the input is also the target)."""

    def __init__(self, num_sets: int, set_size: int, set_dim: int, seed: int, split: str) -> None:
        self.sets = make_random_sets(num_sets, set_size, set_dim, seed, split)  # (B, N, D)

    def __len__(self) -> int:
        return self.sets.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.sets[index]  # (N, D)
