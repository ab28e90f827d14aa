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

Widths, heads and layer counts follow the original experiment scripts (davzha/multiset-equivariance).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from idspn import IDSPN, FSEncoder
from idspn_experiments.engine.spec import ModelEntry
from idspn_experiments.numbering.config import NumberingConfig

__all__ = [
    "DeepSetsLayer",
    "DeepSets",
    "sinusoidal_encoding",
    "NumberingTransformer",
    "BiLSTM",
    "NumberingDSPN",
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

    def __init__(self, classes: int, hidden_dim: int, set_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(DeepSetsLayer(classes, hidden_dim), nn.ReLU(), DeepSetsLayer(hidden_dim, set_size))

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
        set_size: output dimension (the number of IDs, N).
        position: ``"none"`` (set-equivariant), ``"sinusoidal"`` (added to the decoder input) or
            ``"random"`` (half of the decoder input's features are ``alpha + exp(beta) * noise``
            with learned scalars alpha, beta, fresh noise at every call).
        heads: attention heads.
        layers: encoder layers and decoder layers (each).
    """

    POSITIONS = ("none", "sinusoidal", "random")

    def __init__(
        self, classes: int, hidden_dim: int, set_size: int, position: str, heads: int = 8, layers: int = 2
    ) -> None:
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
        self.head = nn.Linear(hidden_dim, set_size)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, C) -> (B, N, N)`` logits."""
        source = self.embed_source(x)  # (B, N, H)
        query = self.embed_query(x)  # (B, N, H) or (B, N, H/2)
        if self.position == "sinusoidal":
            query = query + sinusoidal_encoding(x.shape[1], query.shape[-1], x.device)
        elif self.noise_shift is not None and self.noise_log_scale is not None:  # position == "random"
            hidden = source.shape[-1]
            noise_shape = (*query.shape[:-1], hidden - query.shape[-1])
            noise = torch.randn(noise_shape, device=x.device, dtype=query.dtype)
            query = torch.cat([query, self.noise_shift + self.noise_log_scale.exp() * noise], dim=-1)  # (B, N, H)
        return self.head(self.transformer(source, query))  # (B, N, N)


# --- BiLSTM -----------------------------------------------------------------------------------


class BiLSTM(nn.Module):
    """``Linear(C -> H)``, a bidirectional LSTM over the element order, ``Linear(2H -> N)``."""

    def __init__(self, classes: int, hidden_dim: int, set_size: int, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(classes, hidden_dim)
        self.lstm = nn.LSTM(hidden_dim, hidden_dim, num_layers=layers, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden_dim, set_size)

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
        backward: ``"approx"`` (iDSPN, Eq. 9) or ``"unroll"`` (DSPN).
        iters, lr, momentum, grad_clip, init_std, project_init: the inner optimisation.
        fspool_init: initialisation of both FSPool tables (``FSPool``).
        compile: compile one inner step (``IDSPN(compile=True)``).
    """

    def __init__(
        self,
        classes: int,
        set_size: int,
        hidden_dim: int,
        latent_dim: int,
        backward: str,
        iters: int,
        lr: float,
        momentum: float,
        grad_clip: float | None,
        init_std: float,
        project_init: bool = True,
        fspool_init: str = "fan_out",
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.input_encoder = FSEncoder(classes, hidden_dim, latent_dim, set_size=set_size, fspool_init=fspool_init)
        inner_encoder = FSEncoder(
            classes + set_size, hidden_dim, latent_dim, set_size=set_size, fspool_init=fspool_init
        )  # sees cat(x, Y)
        self.decoder = IDSPN(
            inner_encoder,
            set_size=set_size,
            set_dim=set_size,
            iters=iters,
            lr=lr,
            momentum=momentum,
            grad_clip=grad_clip,
            init="random",
            init_std=init_std,
            projection="simplex",
            project_init=project_init,
            fixed_dim=classes,
            backward=backward,
            compile=compile,
        )

    def forward(self, x: Tensor, init_set: Tensor | None = None, iters: int | None = None) -> Tensor:
        """``(B, N, C) -> (B, N, N)`` points on the simplex.

        Args:
            x: one-hot classes.
            init_set: ``(B, N, N)`` initial set; default a fresh ``init_std * N(0, I)`` draw.
            iters: inner steps (default: the decoder's ``iters``).
        """
        z = self.input_encoder(x)  # (B, L)
        return self.decoder(z, init_set=init_set, fixed=x, iters=iters)  # (B, N, N)


# --- registry ---------------------------------------------------------------------------------


def _transformer(position: str) -> Callable[[NumberingConfig], nn.Module]:
    def build(cfg: NumberingConfig) -> nn.Module:
        m, d = cfg.model, cfg.data
        return NumberingTransformer(d.classes, m.hidden_dim, d.set_size, position, heads=m.heads, layers=m.layers)

    return build


def _dspn(backward: str) -> Callable[[NumberingConfig], nn.Module]:
    def build(cfg: NumberingConfig) -> nn.Module:
        m, d = cfg.model, cfg.data
        return NumberingDSPN(
            d.classes,
            d.set_size,
            m.hidden_dim,
            m.latent_dim,
            backward,
            iters=m.iters,
            lr=m.lr,
            momentum=m.momentum,
            grad_clip=m.grad_clip,
            init_std=m.init_std,
            project_init=m.project_init,
            fspool_init=m.fspool_init,
            compile=m.compile,
        )

    return build


# Every model of Tables 2 and 4: its label, how to build it, its pairwise loss (MSE on the simplex
# for DSPN/iDSPN, cross-entropy on logits otherwise) and the equivariance the paper states.
NUMBERING_MODELS: dict[str, ModelEntry] = {
    "deepsets": ModelEntry(
        "DeepSets",
        lambda cfg: DeepSets(cfg.data.classes, cfg.model.hidden_dim, cfg.data.set_size),
        pairwise="cross_entropy",
        set_equivariant=True,
        multiset_equivariant=True,
    ),
    "transformer_no_pe": ModelEntry(
        "Transformer without PE",
        _transformer("none"),
        pairwise="cross_entropy",
        set_equivariant=True,
        multiset_equivariant=True,
    ),
    "transformer_random_pe": ModelEntry(
        "Transformer with random PE",
        _transformer("random"),
        pairwise="cross_entropy",
        set_equivariant=False,
        multiset_equivariant=False,
    ),
    "transformer_pe": ModelEntry(
        "Transformer with PE",
        _transformer("sinusoidal"),
        pairwise="cross_entropy",
        set_equivariant=False,
        multiset_equivariant=False,
    ),
    "bilstm": ModelEntry(
        "BiLSTM",
        lambda cfg: BiLSTM(cfg.data.classes, cfg.model.hidden_dim, cfg.data.set_size, layers=cfg.model.layers),
        pairwise="cross_entropy",
        set_equivariant=False,
        multiset_equivariant=False,
    ),
    "dspn": ModelEntry(
        "DSPN", _dspn("unroll"), inner_loop=True, pairwise="mse", set_equivariant=False, multiset_equivariant=True
    ),
    "idspn": ModelEntry(
        "iDSPN (ours)",
        _dspn("approx"),
        inner_loop=True,
        pairwise="mse",
        set_equivariant=False,
        multiset_equivariant=True,
    ),
}
