"""The iDSPN model for CLEVR (Appendix F.3): ResNet18 image encoder -> 512-d z -> iDSPN -> object set.

Image encoder: the convolutional trunk of a ResNet18 (He et al., 2016; torchvision's, randomly
initialised: no pretrained weights) turns a ``S x S`` image into a ``f x f x 512`` feature map
(``f = ceil(S / 32)``: 4 at 128 px, 8 at 256 px), followed by BatchNorm and a 2x2 convolution with
stride 2 down to ``f/2 x f/2 x C`` with ``C = latent_dim / (f/2)^2``: 2x2x128 at 128 px and 4x4x32 at
256 px, as in the paper. Flattened, this is the 512-d input z of iDSPN.

Small images (our CPU budgets): when ``f`` is odd (e.g. 3 at 96 px, 1 at 32 px) the feature map is
zero-padded by one row and column at the bottom right before the strided convolution, so no
position is dropped; 64 px and 96 px then give 1x1x512 and 2x2x128. The latent stays 512-d at every
size; sizes for which ``(ceil(f/2))^2`` does not divide ``latent_dim`` (e.g. 160 px) are rejected.

Decoder: ``IDSPN`` with the set encoder Linear(19 -> 512)-ReLU-Linear(512 -> 512)-FSPool (no
relation network), Nesterov momentum 0.9, 20 -> 40 inner steps, inner gradient clipping at norm
10 and a random initial set per example. ``backward="unroll"`` gives the like-to-like DSPN of
Table 7, and ``pooling="sum"|"mean"`` the set-equivariant iDSPNs of Table 7.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from idspn import IDSPN, FSEncoder

__all__ = ["resnet_feature_size", "ResNetImageEncoder", "ClevrIDSPN"]

_TRUNK_CHANNELS = 512  # channels of ResNet18's last stage


def resnet_feature_size(image_size: int) -> int:
    """Side of ResNet18's last feature map for a ``image_size`` input: five halvings, each rounding up."""
    side = image_size
    for _ in range(5):  # conv1, max-pool, layer2, layer3, layer4 have stride 2 and 'same'-style padding
        side = (side + 1) // 2
    return side


class ResNetImageEncoder(nn.Module):
    """Images ``(B, 3, S, S)`` in [0, 1] -> latent vectors ``(B, latent_dim)`` (Appendix F.3).

    Args:
        image_size: side S of the (square) input images.
        latent_dim: size of the output vector (512 in the paper).

    Raises:
        ValueError: for a non-positive size, or a latent_dim the output grid cannot divide evenly.
    """

    def __init__(self, image_size: int, latent_dim: int = 512) -> None:
        super().__init__()
        from torchvision.models import resnet18  # optional dependency of the experiment suite

        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}")
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.feature_size = resnet_feature_size(image_size)  # f
        self.grid_size = math.ceil(self.feature_size / 2)  # side after the 2x2 stride-2 convolution
        cells = self.grid_size**2
        if latent_dim % cells:
            raise ValueError(
                f"latent_dim={latent_dim} must be divisible by the {self.grid_size}x{self.grid_size} output grid "
                f"of image_size={image_size}; image sizes up to 128 give a 1x1 or 2x2 grid, 256 a 4x4 grid"
            )
        resnet = resnet18(weights=None)
        self.trunk = nn.Sequential(
            resnet.conv1,
            resnet.bn1,
            resnet.relu,
            resnet.maxpool,
            resnet.layer1,
            resnet.layer2,
            resnet.layer3,
            resnet.layer4,
        )
        self.norm = nn.BatchNorm2d(_TRUNK_CHANNELS)
        self.reduce = nn.Conv2d(_TRUNK_CHANNELS, latent_dim // cells, kernel_size=2, stride=2)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, S, S) -> (B, latent_dim)``."""
        expected = (3, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape (B, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
        features = self.norm(self.trunk(images))  # (B, 512, f, f)
        odd = self.feature_size % 2
        if odd:
            features = F.pad(features, (0, odd, 0, odd))  # (B, 512, f + 1, f + 1)
        grid = self.reduce(features)  # (B, latent_dim / g^2, g, g)
        return grid.flatten(1)  # (B, latent_dim)


class ClevrIDSPN(nn.Module):
    """Image -> set of object vectors by iDSPN (or DSPN) on the image's latent vector (Section 4.3).

    Args:
        image_size: side of the input images.
        set_size: number of predicted objects N (10 for CLEVR).
        set_dim: dimension D of an object vector (19 for CLEVR).
        latent_dim: size of z.
        hidden_dim: hidden width of the set encoder.
        pooling: "fspool" (exclusively multiset-equivariant), "sum" or "mean" (set-equivariant).
        iters, lr, momentum, grad_clip, init_std, compile: the inner optimisation (see ``IDSPN``).
        backward: "approx" for iDSPN (Eq. 9), "unroll" for DSPN.
        fspool_init: initialisation of the FSPool table (``FSPool``).
    """

    def __init__(
        self,
        image_size: int,
        set_size: int,
        set_dim: int,
        latent_dim: int = 512,
        hidden_dim: int = 512,
        pooling: str = "fspool",
        iters: int = 20,
        lr: float = 1.0,
        momentum: float = 0.9,
        grad_clip: float | None = 10.0,
        init_std: float = 0.1**0.5,
        backward: str = "approx",
        fspool_init: str = "fan_out",
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.image_encoder = ResNetImageEncoder(image_size, latent_dim)
        set_encoder = FSEncoder(
            set_dim, hidden_dim, latent_dim, set_size=set_size, pooling=pooling, fspool_init=fspool_init
        )
        self.decoder = IDSPN(
            set_encoder,
            set_size=set_size,
            set_dim=set_dim,
            iters=iters,
            lr=lr,
            momentum=momentum,
            grad_clip=grad_clip,
            init="random",
            init_std=init_std,
            backward=backward,
            compile=compile,
        )

    def forward(self, images: Tensor, iters: int | None = None) -> Tensor:
        """``(B, 3, S, S) -> (B, N, D)``; ``iters`` overrides the number of inner steps for this call."""
        z = self.image_encoder(images)  # (B, L)
        return self.decoder(z, iters=iters)  # (B, N, D)
