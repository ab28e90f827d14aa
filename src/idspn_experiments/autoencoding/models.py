"""The set autoencoder of Section 4.2 (Appendix F.2 "Models") and the model variants it compares.

``x (B, N, D) -> z = g_in(x) (B, L) -> Y = decoder(z) (B, N, D)``, where the input set encoder
``g_in`` and the decoder's inner encoder ``g`` are both ``Linear(D -> 512)-ReLU-Linear(512 -> 512)``
followed by pooling (FSPool unless ablated), with separate weights. The decoder starts from a learned
initial set Y0 (initialised from N(0, I/10)) and minimises (Section 3, Eq. 6 with the regulariser)::

    1/(2L) ||g(Y) - z||^2 + lambda/2 * mean over the N x D entries of (Y - Y0)^2,     lambda = 0.1

The paper's text leaves the regulariser's scale open (Section 3: ``lambda/2 ||Y - Y0||^2``;
Appendix F.2: ``0.1 ||Y - Y0||^2``); the original code, which produced Tables 5 and 6, averages it
over the set's entries (``0.1 * 0.5 * F.mse_loss(Y, Y0, reduction="none").sum(0).mean()`` beside
``0.5 * mean over latent dims of (g(Y) - z)^2``), i.e. ``IDSPN(reg=0.1 / (N * D))``, which is what
``reg_reduction="mean"`` builds; ``"sum"`` gives ``IDSPN(reg=0.1)``, N x D times stronger. The
regulariser is the only source of gradient for a learned Y0 under implicit differentiation, and
DSPN gets it too so that DSPN and iDSPN without momentum have exactly the same forward pass.

"For the same seed, the weight initializations are the same for all models": every parameter
tensor is initialised from its own generator seeded by ``(seed, parameter name)``, so the weights
a DSPN, an iDSPN and a sum-pooling iDSPN have in common are equal, whatever the construction order.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import Tensor, nn

from idspn import IDSPN, FSEncoder
from idspn_experiments.autoencoding.config import AutoencodingConfig
from idspn_experiments.engine.spec import ModelEntry

__all__ = ["SetAutoencoder", "MODEL_KINDS", "build_autoencoder", "init_parameters"]


class SetAutoencoder(nn.Module):
    """Encode a set into a vector with a set encoder, decode it with DSPN or iDSPN.

    Args:
        set_size: N.
        set_dim: D.
        hidden_dim: width of the per-element MLP of both set encoders.
        latent_dim: L, the size of z.
        pooling: "fspool" (exclusively multiset-equivariant decoder) or "sum"/"mean" (set-equivariant).
        iters, lr, momentum, grad_clip, init_std, backward, compile: the decoder (``IDSPN``).
        reg: lambda; the decoder's ``IDSPN(reg=...)`` is ``reg / (N * D)`` with ``reg_reduction="mean"``.
        reg_reduction: "mean" (the original code's scale) or "sum" over the set's entries.
        fspool_init: initialisation of both FSPool tables (``FSPool``).
    """

    def __init__(
        self,
        set_size: int,
        set_dim: int,
        hidden_dim: int = 512,
        latent_dim: int = 512,
        pooling: str = "fspool",
        iters: int = 20,
        lr: float = 1.0,
        momentum: float = 0.0,
        grad_clip: float | None = None,
        init_std: float = 0.1**0.5,
        reg: float = 0.1,
        backward: str = "approx",
        reg_reduction: str = "mean",
        fspool_init: str = "fan_out",
        compile: bool = False,
    ) -> None:
        super().__init__()
        if reg_reduction not in ("mean", "sum"):
            raise ValueError(f"reg_reduction must be 'mean' or 'sum', got {reg_reduction!r}")
        self.input_encoder = FSEncoder(
            set_dim, hidden_dim, latent_dim, set_size=set_size, pooling=pooling, fspool_init=fspool_init
        )
        inner_encoder = FSEncoder(
            set_dim, hidden_dim, latent_dim, set_size=set_size, pooling=pooling, fspool_init=fspool_init
        )
        self.decoder = IDSPN(
            inner_encoder,
            set_size=set_size,
            set_dim=set_dim,
            iters=iters,
            lr=lr,
            momentum=momentum,
            grad_clip=grad_clip,
            init="learned",
            init_std=init_std,
            reg=reg / (set_size * set_dim) if reg_reduction == "mean" else reg,
            backward=backward,
            compile=compile,
        )

    def forward(self, x: Tensor, iters: int | None = None) -> Tensor:
        """``(B, N, D) -> (B, N, D)`` reconstruction of the input multiset (``iters`` inner steps)."""
        z = self.input_encoder(x)  # (B, L)
        return self.decoder(z, iters=iters)  # (B, N, D)


def _parameter_seed(seed: int, name: str) -> int:
    words = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 32 | int(words[1])


@torch.no_grad()
def init_parameters(model: SetAutoencoder, seed: int) -> None:
    """Re-initialise every parameter from a generator seeded by ``(seed, parameter name)``.

    The distributions are PyTorch's defaults: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for linear weights
    and biases (what ``nn.Linear.reset_parameters`` amounts to), FSPool's own (``FSPool.init``:
    N(0, 1/N) or N(0, 1)) for its weights, and N(0, init_std^2) for the initial set Y0 (Appendix F.2).
    """
    for name, param in model.named_parameters():
        generator = torch.Generator().manual_seed(_parameter_seed(seed, name))
        if name == "decoder.init_set":
            values = torch.randn(param.shape, generator=generator) * model.decoder.init_std
        elif name.endswith("pool.weight"):
            pool = model.get_submodule(name.rsplit(".", 1)[0])
            std = 1.0 if pool.init == "normal" else param.shape[0] ** -0.5
            values = torch.randn(param.shape, generator=generator) * std
        else:
            module = model.get_submodule(name.rsplit(".", 1)[0])
            if not isinstance(module, nn.Linear):
                raise ValueError(f"init_parameters does not know how to initialise parameter {name!r}")
            bound = module.in_features**-0.5
            values = torch.rand(param.shape, generator=generator) * (2 * bound) - bound
        param.copy_(values)


def _kind(label: str, backward: str, momentum: float, pooling: str) -> ModelEntry:
    overrides = (f"model.backward={backward}", f"model.momentum={momentum}", f"model.pooling={pooling}")
    return ModelEntry(label, lambda cfg: build_autoencoder(cfg), inner_loop=True, pairwise="huber", overrides=overrides)


# The compared models, all one SetAutoencoder with other settings: Section 4.2 compares the first
# three (Table 5); Appendix E.2 ablates the pooling (Table 6).
MODEL_KINDS: dict[str, ModelEntry] = {
    "idspn-mom": _kind("iDSPN+mom", "approx", 0.9, "fspool"),
    "idspn": _kind("iDSPN", "approx", 0.0, "fspool"),
    "dspn": _kind("Baseline (DSPN)", "unroll", 0.0, "fspool"),
    "idspn-mom-sum": _kind("iDSPN+mom+Sum", "approx", 0.9, "sum"),
    "idspn-mom-mean": _kind("iDSPN+mom+Mean", "approx", 0.9, "mean"),
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
        lr=m.lr,
        momentum=m.momentum,
        grad_clip=m.grad_clip,
        init_std=m.init_std,
        reg=m.reg,
        backward=m.backward,
        reg_reduction=m.reg_reduction,
        fspool_init=m.fspool_init,
        compile=m.compile,
    )
    init_parameters(model, cfg.seed)
    return model
