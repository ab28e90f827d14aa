"""The set autoencoder of Section 4.2 (Appendix F.2 "Models") and the model variants it compares.

``x (B, N, D) -> z = g_in(x) (B, L) -> Y = decoder(z) (B, N, D)``, where the input set encoder
``g_in`` and the decoder's inner encoder ``g`` are both ``Linear(D -> 512)-ReLU-Linear(512 -> 512)``
followed by pooling (FSPool unless ablated), with separate weights. The decoder starts from a learned
initial set Y0 (initialised from N(0, I/10)) and minimises (Section 3, Eq. 6 with the regulariser)::

    1/(2L) ||g(Y) - z||^2 + lambda/2 ||Y - Y0||^2,     lambda = 0.1

Appendix F.2 writes the regulariser as ``0.1 ||Y - Y0||^2``; Section 3 defines it as
``lambda/2 ||Y - Y0||^2``. We read lambda = 0.1, which is also what the original code does
(``0.1 * 0.5 * ||Y - Y0||^2`` beside ``0.5 * mean over latent dims of (g(Y) - z)^2``, the scale the
inner learning rate 1.0 was tuned for). The regulariser is the only source of gradient for a
learned Y0 under implicit differentiation, and DSPN gets it too so that DSPN and iDSPN without
momentum have exactly the same forward pass.

"For the same seed, the weight initializations are the same for all models": every parameter
tensor is initialised from its own generator seeded by ``(seed, parameter name)``, so the weights
a DSPN, an iDSPN and a sum-pooling iDSPN have in common are equal, whatever the construction order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from idspn import IDSPN, FSEncoder
from idspn.experiments.autoencoding.config import AutoencodingConfig

__all__ = ["SetAutoencoder", "ModelKind", "MODEL_KINDS", "build_autoencoder", "init_parameters"]


class SetAutoencoder(nn.Module):
    """Encode a set into a vector with a set encoder, decode it with DSPN or iDSPN.

    Args:
        set_size: N.
        set_dim: D.
        hidden_dim: width of the per-element MLP of both set encoders.
        latent_dim: L, the size of z.
        pooling: "fspool" (exclusively multiset-equivariant decoder) or "sum"/"mean" (set-equivariant).
        iters, inner_lr, momentum, inner_grad_clip, init_std, reg, backward: the decoder (``IDSPN``).
    """

    def __init__(
        self,
        set_size: int,
        set_dim: int,
        hidden_dim: int = 512,
        latent_dim: int = 512,
        pooling: str = "fspool",
        iters: int = 20,
        inner_lr: float = 1.0,
        momentum: float = 0.0,
        inner_grad_clip: float | None = None,
        init_std: float = 0.1**0.5,
        reg: float = 0.1,
        backward: str = "approx",
    ) -> None:
        super().__init__()
        self.input_encoder = FSEncoder(set_dim, hidden_dim, latent_dim, set_size=set_size, pooling=pooling)
        inner_encoder = FSEncoder(set_dim, hidden_dim, latent_dim, set_size=set_size, pooling=pooling)
        self.decoder = IDSPN(
            inner_encoder,
            set_size=set_size,
            set_dim=set_dim,
            iters=iters,
            lr=inner_lr,
            momentum=momentum,
            grad_clip=inner_grad_clip,
            init="learned",
            init_std=init_std,
            reg=reg,
            backward=backward,
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, D) -> (B, N, D)`` reconstruction of the input multiset."""
        z = self.input_encoder(x)  # (B, L)
        return self.decoder(z)  # (B, N, D)


def _parameter_seed(seed: int, name: str) -> int:
    words = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 32 | int(words[1])


@torch.no_grad()
def init_parameters(model: SetAutoencoder, seed: int) -> None:
    """Re-initialise every parameter from a generator seeded by ``(seed, parameter name)``.

    The distributions are PyTorch's defaults: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for linear weights
    and biases (what ``nn.Linear.reset_parameters`` amounts to), N(0, 1) for FSPool's weights, and
    N(0, init_std^2) for the initial set Y0 (Appendix F.2).
    """
    for name, param in model.named_parameters():
        generator = torch.Generator().manual_seed(_parameter_seed(seed, name))
        if name == "decoder.init_set":
            values = torch.randn(param.shape, generator=generator) * model.decoder.init_std
        elif name.endswith("pool.weight"):
            values = torch.randn(param.shape, generator=generator)
        else:
            module = model.get_submodule(name.rsplit(".", 1)[0])
            if not isinstance(module, nn.Linear):
                raise ValueError(f"init_parameters does not know how to initialise parameter {name!r}")
            bound = module.in_features**-0.5
            values = torch.rand(param.shape, generator=generator) * (2 * bound) - bound
        param.copy_(values)


@dataclass(frozen=True)
class ModelKind:
    """A compared model: its label in Tables 5-6 and the config values that define it."""

    label: str  # row label in the paper's tables
    backward: str  # "approx" (iDSPN) or "unroll" (DSPN)
    momentum: float  # Nesterov momentum of the inner loop
    pooling: str  # pooling of both set encoders

    def overrides(self) -> tuple[str, ...]:
        """``key=value`` config overrides selecting this model."""
        return (f"model.backward={self.backward}", f"model.momentum={self.momentum}", f"model.pooling={self.pooling}")


# Section 4.2 compares the first three (Table 5); Appendix E.2 ablates the pooling (Table 6).
MODEL_KINDS: dict[str, ModelKind] = {
    "idspn-mom": ModelKind("iDSPN+mom", "approx", 0.9, "fspool"),
    "idspn": ModelKind("iDSPN", "approx", 0.0, "fspool"),
    "dspn": ModelKind("Baseline (DSPN)", "unroll", 0.0, "fspool"),
    "idspn-mom-sum": ModelKind("iDSPN+mom+Sum", "approx", 0.9, "sum"),
    "idspn-mom-mean": ModelKind("iDSPN+mom+Mean", "approx", 0.9, "mean"),
}


def build_autoencoder(cfg: AutoencodingConfig) -> SetAutoencoder:
    """The autoencoder of ``cfg``, initialised from ``cfg.seed`` identically across model kinds."""
    d, m = cfg.data, cfg.model
    model = SetAutoencoder(
        d.set_size,
        d.set_dim,
        hidden_dim=m.hidden_dim,
        latent_dim=m.latent_dim,
        pooling=m.pooling,
        iters=m.iters,
        inner_lr=m.inner_lr,
        momentum=m.momentum,
        inner_grad_clip=m.inner_grad_clip,
        init_std=m.init_std,
        reg=m.reg,
        backward=m.backward,
    )
    init_parameters(model, cfg.seed)
    return model
