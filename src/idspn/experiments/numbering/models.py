"""The models of the numbering experiment (Appendix F.1 "Models"), smallest part first.

Every model maps the input multiset ``x (B, N, C)`` (one-hot classes) to one output per input
element, ``(B, N, N)`` scores over the N possible IDs, with output element i belonging to input
element i. That pairing is the paper's "prior information" that every input instance reappears in
the output: the models only predict the ID, and the loss matches within classes.

* DeepSets, equivariant version: set-equivariant, so equal inputs get equal outputs.
* Transformer: the decoder's input is an affine map ``W x_i + b`` of the input elements (pairing
  outputs with inputs). Without position encoding it is set-equivariant; with sinusoidal position
  encoding, or with random "position" features (as in TSPN), both given to the decoder only, it is
  not multiset-equivariant.
* BiLSTM: order-dependent, not multiset-equivariant.
* DSPN / iDSPN: z from an FSPool encoder of x; the decoder optimises Y ``(B, N, N)`` with the first
  C dims of every element fixed to x (``fixed=x``), projecting onto the simplex after every step.
  With FSPool they are exclusively multiset-equivariant. Outputs are points on the simplex
  (probabilities), the other models' outputs are logits.

Widths, heads and layer counts follow the original experiment scripts (REFERENCE.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from idspn import DSPN, IDSPN, FSEncoder
from idspn.experiments.numbering.config import NumberingConfig

__all__ = [
    "DeepSetsLayer",
    "DeepSets",
    "sinusoidal_encoding",
    "NumberingTransformer",
    "BiLSTM",
    "NumberingDSPN",
    "NumberingModel",
    "NUMBERING_MODELS",
]


# --- DeepSets ---------------------------------------------------------------------------------


class DeepSetsLayer(nn.Module):
    """Set-equivariant layer ``x_i -> A x_i + B mean_j x_j`` (Zaheer et al., equivariant form)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.element = nn.Linear(in_dim, out_dim)
        self.pooled = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, in_dim) -> (B, N, out_dim)``."""
        return self.element(x) + self.pooled(x.mean(dim=1, keepdim=True))  # (B, N, out_dim)


class DeepSets(nn.Module):
    """Two equivariant DeepSets layers with a ReLU: ``(B, N, C) -> (B, N, N)`` logits."""

    def __init__(self, classes: int, hidden_dim: int, id_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(DeepSetsLayer(classes, hidden_dim), nn.ReLU(), DeepSetsLayer(hidden_dim, id_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


# --- Transformers -----------------------------------------------------------------------------


def sinusoidal_encoding(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """``(length, dim)`` sine/cosine position encoding of Vaswani et al. (2017)."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)  # (N, 1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    enc = torch.zeros(length, dim, device=device)
    enc[:, 0::2] = torch.sin(position * freq)
    enc[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return enc


class NumberingTransformer(nn.Module):
    """Encoder-decoder transformer whose decoder input is an affine map of the input elements.

    Args:
        classes: input element dimension C.
        hidden_dim: model width (divisible by ``heads``).
        id_dim: output dimension (the number of IDs, N).
        position: ``"none"`` (set-equivariant), ``"sinusoidal"`` (added to the decoder input) or
            ``"random"`` (half of the decoder input's features are ``alpha + exp(beta) * noise``
            with learned scalars alpha, beta, fresh noise at every call).
        heads: attention heads.
        layers: encoder layers and decoder layers (each).
    """

    POSITIONS = ("none", "sinusoidal", "random")

    def __init__(self, classes: int, hidden_dim: int, id_dim: int, position: str, heads: int = 8, layers: int = 2) -> None:
        super().__init__()
        if position not in self.POSITIONS:
            raise ValueError(f"position must be one of {self.POSITIONS}, got {position!r}")
        if hidden_dim % heads:
            raise ValueError(f"hidden_dim={hidden_dim} must be divisible by heads={heads}")
        self.position = position
        self.transformer = nn.Transformer(
            d_model=hidden_dim,
            nhead=heads,
            num_encoder_layers=layers,
            num_decoder_layers=layers,
            dim_feedforward=2 * hidden_dim,
            dropout=0.0,
            batch_first=True,
        )
        self.embed_source = nn.Linear(classes, hidden_dim)
        query_dim = hidden_dim // 2 if position == "random" else hidden_dim
        self.embed_query = nn.Linear(classes, query_dim)  # (Y0)_i = W x_i + b
        self.noise_shift = nn.Parameter(torch.zeros(1)) if position == "random" else None  # alpha
        self.noise_log_scale = nn.Parameter(torch.zeros(1)) if position == "random" else None  # beta
        self.head = nn.Linear(hidden_dim, id_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, C) -> (B, N, N)`` logits."""
        source = self.embed_source(x)  # (B, N, H)
        query = self.embed_query(x)  # (B, N, H) or (B, N, H/2)
        if self.position == "sinusoidal":
            query = query + sinusoidal_encoding(x.shape[1], query.shape[-1], x.device)
        elif self.position == "random":
            hidden = source.shape[-1]
            noise_shape = (*query.shape[:-1], hidden - query.shape[-1])
            noise = torch.randn(noise_shape, device=x.device, dtype=query.dtype)
            query = torch.cat([query, self.noise_shift + self.noise_log_scale.exp() * noise], dim=-1)  # (B, N, H)
        return self.head(self.transformer(source, query))  # (B, N, N)


# --- BiLSTM -----------------------------------------------------------------------------------


class BiLSTM(nn.Module):
    """``Linear(C -> H)``, a bidirectional LSTM over the element order, ``Linear(2H -> N)``."""

    def __init__(self, classes: int, hidden_dim: int, id_dim: int, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(classes, hidden_dim)
        self.lstm = nn.LSTM(hidden_dim, hidden_dim, num_layers=layers, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden_dim, id_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, C) -> (B, N, N)`` logits."""
        out, _ = self.lstm(self.embed(x))  # (B, N, 2H)
        return self.head(out)


# --- DSPN / iDSPN -----------------------------------------------------------------------------


class NumberingDSPN(nn.Module):
    """z = FSEncoder(x); Y = decoder(z, fixed=x): the decoder optimises IDs next to fixed classes.

    Args:
        classes: C, the fixed leading dims of every element.
        set_size: N, elements per set and width of the ID one-hot.
        hidden_dim, latent_dim: widths of both FSPool encoders.
        decoder_type: ``IDSPN`` (approximate implicit backward) or ``DSPN`` (unrolled backward).
        iters, inner_lr, momentum, inner_grad_clip, init_std, project_init: the inner optimisation.
        fspool_init: initialisation of both FSPool tables (``FSPool``).
        compile: compile one inner step (``IDSPN(compile=True)``).
    """

    def __init__(
        self,
        classes: int,
        set_size: int,
        hidden_dim: int,
        latent_dim: int,
        decoder_type: type[IDSPN],
        iters: int,
        inner_lr: float,
        momentum: float,
        inner_grad_clip: float | None,
        init_std: float,
        project_init: bool = True,
        fspool_init: str = "fan_out",
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.input_encoder = FSEncoder(classes, hidden_dim, latent_dim, set_size=set_size, fspool_init=fspool_init)
        inner_encoder = FSEncoder(classes + set_size, hidden_dim, latent_dim, set_size=set_size,
                                  fspool_init=fspool_init)  # sees cat(x, Y)
        self.decoder = decoder_type(
            inner_encoder,
            set_size=set_size,
            set_dim=set_size,
            iters=iters,
            lr=inner_lr,
            momentum=momentum,
            grad_clip=inner_grad_clip,
            init="random",
            init_std=init_std,
            projection="simplex",
            project_init=project_init,
            fixed_dim=classes,
            compile=compile,
        )

    def forward(self, x: Tensor, init_set: Tensor | None = None) -> Tensor:
        """``(B, N, C) -> (B, N, N)`` points on the simplex.

        Args:
            x: one-hot classes.
            init_set: ``(B, N, N)`` initial set; default a fresh ``init_std * N(0, I)`` draw.
        """
        z = self.input_encoder(x)  # (B, L)
        return self.decoder(z, init_set=init_set, fixed=x)  # (B, N, N)


# --- registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberingModel:
    """A numbering model: how to build it, its pairwise loss and its equivariance (Table 2)."""

    build: Callable[[NumberingConfig], nn.Module]  # fresh model from the config
    pairwise: str  # pairwise loss of the Hungarian loss: "mse" (on the simplex) or "cross_entropy" (logits)
    label: str  # row label in the paper's tables
    set_equivariant: bool  # Table 2's "Set-equivariant" column
    multiset_equivariant: bool  # Table 2's "Multiset-equivariant" column


def _transformer(position: str) -> Callable[[NumberingConfig], nn.Module]:
    def build(cfg: NumberingConfig) -> nn.Module:
        m, d = cfg.model, cfg.data
        return NumberingTransformer(d.classes, m.hidden_dim, d.set_size, position, heads=m.heads, layers=m.layers)

    return build


def _dspn(decoder_type: type[IDSPN]) -> Callable[[NumberingConfig], nn.Module]:
    def build(cfg: NumberingConfig) -> nn.Module:
        m, d = cfg.model, cfg.data
        return NumberingDSPN(
            d.classes,
            d.set_size,
            m.hidden_dim,
            m.latent_dim,
            decoder_type,
            iters=m.iters,
            inner_lr=m.inner_lr,
            momentum=m.momentum,
            inner_grad_clip=m.inner_grad_clip,
            init_std=m.init_std,
            project_init=m.project_init,
            fspool_init=m.fspool_init,
            compile=m.compile,
        )

    return build


NUMBERING_MODELS: dict[str, NumberingModel] = {
    "deepsets": NumberingModel(
        lambda cfg: DeepSets(cfg.data.classes, cfg.model.hidden_dim, cfg.data.set_size),
        "cross_entropy", "DeepSets", True, True,
    ),
    "transformer_no_pe": NumberingModel(_transformer("none"), "cross_entropy", "Transformer without PE", True, True),
    "transformer_random_pe": NumberingModel(
        _transformer("random"), "cross_entropy", "Transformer with random PE", False, False
    ),
    "transformer_pe": NumberingModel(_transformer("sinusoidal"), "cross_entropy", "Transformer with PE", False, False),
    "bilstm": NumberingModel(
        lambda cfg: BiLSTM(cfg.data.classes, cfg.model.hidden_dim, cfg.data.set_size, layers=cfg.model.layers),
        "cross_entropy", "BiLSTM", False, False,
    ),
    "dspn": NumberingModel(_dspn(DSPN), "mse", "DSPN", False, True),
    "idspn": NumberingModel(_dspn(IDSPN), "mse", "iDSPN (ours)", False, True),
}
