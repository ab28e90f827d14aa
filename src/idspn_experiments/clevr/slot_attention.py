"""The baselines of Table 3: Slot Attention and Slot MLP for set prediction (Locatello et al., 2020).

Written from the Slot Attention paper's description (Section 3 and Algorithm 1; set prediction
architecture of its Appendix), smallest part first:

* ``CNNEncoder``: four 5x5 convolutions with 64 channels and ReLU, strides 1, 2, 2, 1, so a 128x128
  image becomes a 32x32x64 feature map (Appendix F.3 of the iDSPN paper: "32x32 spatial positions
  with 64d each").
* ``SoftPositionEmbedding``: a linear map of the 4-d position grid ``[x, y, 1 - x, 1 - y]`` (in
  [0, 1]) added to the features.
* ``SlotAttention`` (Algorithm 1): slots drawn from a learned Gaussian ``mu + sigma * N(0, I)``;
  each iteration normalises the slots, computes dot-product attention of the inputs over the slots
  with a softmax *over the slots* (the slots compete for each input position), takes the
  attention-weighted mean of the values (``+ eps`` before renormalising over the inputs), updates
  every slot with a shared GRU and adds a residual MLP. Everything is applied slot-wise with
  shared weights, so the module is permutation-equivariant in its slots.
* ``SlotAttentionPredictor``: CNN -> position embedding -> flatten -> LayerNorm -> MLP(64, 64) ->
  Slot Attention (10 slots, 3 iterations, slot size 64, MLP hidden 128) -> per-slot MLP head
  (64 -> 19) with a sigmoid.
* ``SlotMLPPredictor``: the same encoder, but the Slot Attention module is replaced by an MLP from
  the flattened feature map to the (ordered) slots. To keep this MLP's input small the feature map
  is average-pooled to ``mlp_pool x mlp_pool`` first (our choice; 8x8x64 = 4,096 inputs); hidden
  widths 512.

Output coordinates: the sigmoid bounds every output to [0, 1], the range of the default Slot
Attention targets. For the * and dagger variants (targets' coordinates in [-1, 1] or [-3, 3]) the
three coordinate outputs are mapped affinely from [0, 1] onto that range, which scales their loss
weight by 2 or 6 exactly as the wider targets do.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from idspn_experiments.clevr.layout import LAYOUT, coord_bounds

__all__ = [
    "CNNEncoder",
    "SoftPositionEmbedding",
    "SlotAttention",
    "SlotHead",
    "SlotAttentionPredictor",
    "SlotMLPPredictor",
]


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4:
        raise ValueError(f"image_size must be an int >= 4, got {image_size!r}")


def _check_images(images: Tensor, image_size: int) -> None:
    if images.dim() != 4 or tuple(images.shape[1:]) != (3, image_size, image_size):
        raise ValueError(f"images must have shape (B, 3, {image_size}, {image_size}), got {tuple(images.shape)}")


class CNNEncoder(nn.Module):
    """``(B, 3, S, S) -> (B, C, S/4, S/4)``: four 5x5 convolutions (strides 1, 2, 2, 1) with ReLU."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for stride in (1, 2, 2, 1):
            layers += [nn.Conv2d(in_channels, channels, kernel_size=5, stride=stride, padding=2), nn.ReLU()]
            in_channels = channels
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)


class SoftPositionEmbedding(nn.Module):
    """Adds ``W [x, y, 1 - x, 1 - y] + b`` at every position of a ``(B, C, H, W)`` feature map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(4, channels)

    def forward(self, features: Tensor) -> Tensor:
        height, width = features.shape[-2:]
        ys = torch.linspace(0.0, 1.0, height, device=features.device, dtype=features.dtype)
        xs = torch.linspace(0.0, 1.0, width, device=features.device, dtype=features.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
        grid = torch.stack([grid_x, grid_y, 1 - grid_x, 1 - grid_y], dim=-1)  # (H, W, 4)
        return features + self.proj(grid).permute(2, 0, 1).unsqueeze(0)  # (B, C, H, W)


class SlotAttention(nn.Module):
    """Slot Attention (Locatello et al., 2020, Algorithm 1): inputs ``(B, M, C)`` -> slots ``(B, K, slot_dim)``.

    Args:
        num_slots: K.
        input_dim: C.
        slot_dim: size of a slot (also of queries, keys and values).
        iters: attention iterations T.
        hidden_dim: hidden width of the residual MLP.
        eps: added to the attention weights before the weighted mean.
    """

    def __init__(
        self, num_slots: int, input_dim: int, slot_dim: int, iters: int = 3, hidden_dim: int = 128, eps: float = 1e-8
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_slots", num_slots),
            ("input_dim", input_dim),
            ("slot_dim", slot_dim),
            ("iters", iters),
            ("hidden_dim", hidden_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.num_slots, self.slot_dim, self.iters, self.eps = num_slots, slot_dim, iters, eps
        self.norm_inputs = nn.LayerNorm(input_dim)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.norm_mlp = nn.LayerNorm(slot_dim)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=False)
        self.to_k = nn.Linear(input_dim, slot_dim, bias=False)
        self.to_v = nn.Linear(input_dim, slot_dim, bias=False)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.mlp = nn.Sequential(nn.Linear(slot_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, slot_dim))
        self.slots_mu = nn.Parameter(torch.randn(1, 1, slot_dim) * slot_dim**-0.5)
        self.slots_log_sigma = nn.Parameter(torch.zeros(1, 1, slot_dim))

    def initial_slots(self, batch_size: int, like: Tensor) -> Tensor:
        """``(B, K, slot_dim)`` slots drawn from the learned Gaussian (torch's global RNG)."""
        noise = torch.randn(batch_size, self.num_slots, self.slot_dim, device=like.device, dtype=like.dtype)
        return self.slots_mu + self.slots_log_sigma.exp() * noise

    def forward(self, inputs: Tensor, slots: Tensor | None = None) -> list[Tensor]:
        """Run the iterations.

        Args:
            inputs: ``(B, M, C)`` input features.
            slots: ``(B, K, slot_dim)`` initial slots (default: drawn with ``initial_slots``).

        Returns:
            The slots after each iteration, ``iters`` tensors ``(B, K, slot_dim)``; the last is the output.
        """
        b = inputs.shape[0]
        if slots is None:
            slots = self.initial_slots(b, inputs)
        elif slots.dim() != 3 or slots.shape[0] != b or slots.shape[2] != self.slot_dim:
            raise ValueError(f"slots must have shape ({b}, K, {self.slot_dim}), got {tuple(slots.shape)}")
        inputs = self.norm_inputs(inputs)
        keys = self.to_k(inputs)  # (B, M, S)
        values = self.to_v(inputs)  # (B, M, S)
        out = []
        for _ in range(self.iters):
            previous = slots
            queries = self.to_q(self.norm_slots(slots)) * self.slot_dim**-0.5  # (B, K, S)
            logits = keys @ queries.transpose(1, 2)  # (B, M, K)
            attention = logits.softmax(dim=-1) + self.eps  # (B, M, K): the slots compete for each input
            attention = attention / attention.sum(dim=1, keepdim=True)  # weighted mean over the inputs
            updates = attention.transpose(1, 2) @ values  # (B, K, S)
            slots = self.gru(updates.reshape(-1, self.slot_dim), previous.reshape(-1, self.slot_dim))  # (B*K, S)
            slots = slots.view(b, -1, self.slot_dim)  # (B, K, S)
            slots = slots + self.mlp(self.norm_mlp(slots))
            out.append(slots)
        return out


class SlotHead(nn.Module):
    """Per-slot MLP ``slot_dim -> hidden -> set_dim`` with a sigmoid; coordinates mapped to ``coord_range``."""

    def __init__(self, slot_dim: int, set_dim: int, coord_range: str, hidden_dim: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(slot_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, set_dim))
        self.coord_low, self.coord_high = coord_bounds(coord_range)
        self.coord_range = coord_range

    def forward(self, slots: Tensor) -> Tensor:
        """``(..., K, slot_dim) -> (..., K, set_dim)``."""
        out = self.mlp(slots).sigmoid()  # (..., K, D) in [0, 1]
        if (self.coord_low, self.coord_high) == (0.0, 1.0):
            return out
        coords = self.coord_low + (self.coord_high - self.coord_low) * out[..., LAYOUT.coords]
        return torch.cat([coords, out[..., LAYOUT.coords.stop :]], dim=-1)


class _EncodedImage(nn.Module):
    """CNN -> position embedding -> LayerNorm -> MLP per position: ``(B, 3, S, S) -> (B, S/4, S/4, C)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cnn = CNNEncoder(channels)
        self.position = SoftPositionEmbedding(channels)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels))

    def forward(self, images: Tensor) -> Tensor:
        features = self.position(self.cnn(images)).permute(0, 2, 3, 1)  # (B, H, W, C)
        return self.mlp(self.norm(features))  # (B, H, W, C)


class SlotAttentionPredictor(nn.Module):
    """Slot Attention for set prediction: images ``(B, 3, S, S)`` -> sets ``(B, K, set_dim)``.

    Args:
        image_size: side S of the input images.
        set_size: number of slots K (10 for CLEVR).
        set_dim: output dimension of a slot (19 for CLEVR).
        coord_range: range of the target coordinates ("0..1" default, "-1..1" for *, "-3..3" for dagger).
        channels: channels of the CNN encoder.
        slot_dim, iters, hidden_dim: of ``SlotAttention``.
    """

    def __init__(
        self,
        image_size: int,
        set_size: int,
        set_dim: int,
        coord_range: str = "0..1",
        channels: int = 64,
        slot_dim: int = 64,
        iters: int = 3,
        hidden_dim: int = 128,
    ) -> None:
        super().__init__()
        _check_image_size(image_size)
        self.image_size = image_size
        self.encoder = _EncodedImage(channels)
        self.slot_attention = SlotAttention(set_size, channels, slot_dim, iters, hidden_dim)
        self.head = SlotHead(slot_dim, set_dim, coord_range)

    def _slots(self, images: Tensor) -> list[Tensor]:
        _check_images(images, self.image_size)
        features = self.encoder(images).flatten(1, 2)  # (B, H*W, C)
        return self.slot_attention(features)  # T x (B, K, slot_dim)

    def forward(self, images: Tensor, all_iters: bool = False) -> Tensor:
        """``(B, 3, S, S) -> (B, K, D)``: the prediction after the last iteration; with ``all_iters``,
        ``(T, B, K, D)``: the prediction after every iteration (deep supervision).

        One ``forward`` for both, so that a wrapper such as ``DistributedDataParallel`` (whose
        gradient reduction needs its own forward to run) serves deep supervision too.
        """
        slots = self._slots(images)  # T x (B, K, slot_dim)
        return self.head(torch.stack(slots)) if all_iters else self.head(slots[-1])


class SlotMLPPredictor(nn.Module):
    """Slot MLP: the Slot Attention module replaced by an MLP to ordered slots (Locatello et al., 2020).

    Args:
        image_size: side S of the input images.
        set_size: number of slots K.
        set_dim: output dimension of a slot.
        coord_range: range of the target coordinates.
        channels: channels of the CNN encoder.
        slot_dim: size of a slot.
        pool: the feature map is average-pooled to ``pool x pool`` before flattening.
        hidden_dim: width of the MLP's two hidden layers.
    """

    def __init__(
        self,
        image_size: int,
        set_size: int,
        set_dim: int,
        coord_range: str = "0..1",
        channels: int = 64,
        slot_dim: int = 64,
        pool: int = 8,
        hidden_dim: int = 512,
    ) -> None:
        super().__init__()
        _check_image_size(image_size)
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ValueError(f"pool must be a positive int, got {pool!r}")
        self.image_size, self.set_size, self.slot_dim = image_size, set_size, slot_dim
        self.encoder = _EncodedImage(channels)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.mlp = nn.Sequential(
            nn.Linear(channels * pool * pool, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, set_size * slot_dim),
        )
        self.head = SlotHead(slot_dim, set_dim, coord_range)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, S, S) -> (B, K, D)``."""
        _check_images(images, self.image_size)
        grid = self.encoder(images).permute(0, 3, 1, 2)  # (B, C, H, W)
        flat = self.pool(grid).flatten(1)  # (B, C * pool^2)
        slots = self.mlp(flat).view(-1, self.set_size, self.slot_dim)  # (B, K, slot_dim)
        return self.head(slots)  # (B, K, D)
