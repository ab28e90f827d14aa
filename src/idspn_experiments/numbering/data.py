"""Class-specific numbering data (Section 4.1, Appendix F.1 "Dataset").

Input: a multiset of ``set_size`` elements, each a class drawn i.i.d. and uniformly from
``classes`` classes (one-hot, ``(N, classes)``). Target: for every element, its incremental ID
within its class (the k-th element of class c gets ID k, k = 0, 1, ...), one-hot over
``set_size`` IDs (``(N, set_size)``). Element i of the target belongs to element i of the input;
because the loss matches within classes, which instance of a class gets which ID does not matter.

Examples are stored as integer tensors (class ids and target IDs, ``(N,)`` each) and made one-hot
on the device by :func:`one_hot_batch`: the 64,000-example test set would otherwise take 1 GB.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["NumberingDataset", "make_numbering", "class_ids", "one_hot_batch", "permute_elements", "SPLIT_IDS"]

# Mixed into the seed so that the splits are independent draws.
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def class_ids(classes: Tensor) -> Tensor:
    """Per-class incremental IDs: ``(B, N)`` class ids -> ``(B, N)`` IDs, 0-based within each class."""
    num_classes = int(classes.max()) + 1 if classes.numel() else 1
    indicator = torch.nn.functional.one_hot(classes, num_classes)  # (B, N, C)
    running = indicator.cumsum(dim=1)  # (B, N, C): how many of each class up to and including i
    return (running * indicator).sum(dim=2) - 1  # (B, N)


def make_numbering(num_examples: int, set_size: int, classes: int, seed: int, split: str) -> tuple[Tensor, Tensor]:
    """Generate one split.

    Args:
        num_examples: number of multisets.
        set_size: elements per multiset (N).
        classes: number of classes (C).
        seed: the run's seed; with ``split`` it fixes the draw.
        split: "train" | "val" | "test".

    Returns:
        ``classes (num_examples, N)`` long in [0, C) and ``ids (num_examples, N)`` long in [0, N).

    Raises:
        ValueError: for an unknown split or non-positive sizes.
    """
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
    if num_examples <= 0 or set_size <= 0 or classes <= 0:
        raise ValueError(
            f"num_examples, set_size and classes must be positive, got {num_examples}, {set_size}, {classes}"
        )
    words = np.random.SeedSequence([seed, SPLIT_IDS[split]]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))
    labels = torch.randint(0, classes, (num_examples, set_size), generator=generator)  # (B, N)
    return labels, class_ids(labels)


class NumberingDataset(Dataset):
    """One split as a map-style dataset of ``{"classes": (N,), "ids": (N,)}`` long tensors."""

    def __init__(self, num_examples: int, set_size: int, classes: int, seed: int, split: str) -> None:
        self.num_classes = classes
        self.classes, self.ids = make_numbering(num_examples, set_size, classes, seed, split)

    def __len__(self) -> int:
        return self.classes.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"classes": self.classes[index], "ids": self.ids[index]}


def one_hot_batch(batch: dict[str, Tensor], classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Model input and target of a batch.

    Returns:
        ``inputs (B, N, C)`` float one-hot classes, ``targets (B, N, N)`` float one-hot IDs and
        ``labels (B, N)`` long class ids (the matching groups).
    """
    labels, ids = batch["classes"], batch["ids"]
    set_size = ids.shape[1]
    inputs = torch.nn.functional.one_hot(labels, classes).float()  # (B, N, C)
    targets = torch.nn.functional.one_hot(ids, set_size).float()  # (B, N, N)
    return inputs, targets, labels


def permute_elements(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Data augmentation of Table 4: an independent random order of each multiset's elements.

    Draws from torch's global RNG (the engine's checkpointed training stream).
    """
    labels = batch["classes"]
    order = torch.rand(labels.shape, device=labels.device).argsort(dim=1)  # (B, N)
    return {name: value.gather(1, order) for name, value in batch.items()}
