"""Your own set encoder in IDSPN: what it implies for equivariance, and a check of the gradients.

The decoder optimises its set through the encoder g, so g decides what the decoder can do
(the paper's Section 2): with FSPool (pooling by sorting) an iDSPN is exclusively
multiset-equivariant, so it can separate equal initial elements; with sum pooling it is
set-equivariant and equal elements stay equal for ever. Here g is a small attention encoder:

    element MLP -> one self-attention layer -> Linear -> FSPool (or SumPool)

Subclassing ``SetEncoder`` and writing ``forward(x, mask)`` is all IDSPN needs: the inner gradient
comes from ``torch.func.vjp`` of that forward. Two things to copy into your own encoder:

* pass ``duplicate_index(x)`` to the pooling, so that exact duplicates in the input tie by
  position whatever the floating-point rounding of the layers before (BLAS kernels may round
  equal rows differently by where they fall): multiset-equivariance then holds by construction;
* check what you built with ``classify_equivariance`` (an empirical test of Definitions 1-2) and
  check the backward mode's gradient (``torch.autograd.gradcheck``), as below.

    python examples/own_encoder.py [--smoke]
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from idspn import IDSPN, FSPool, SetEncoder, SumPool, classify_equivariance
from idspn.ranking import duplicate_index


class AttentionEncoder(SetEncoder):
    """g: ``(B, N, D) -> (B, L)``, permutation-invariant; ``pooling`` is ``"fspool"`` or ``"sum"``."""

    def __init__(self, set_dim: int, hidden: int, latent: int, set_size: int, pooling: str = "fspool") -> None:
        super().__init__()
        self.set_dim, self.latent_dim = set_dim, latent  # IDSPN checks z and its sets against these
        self.embed = nn.Sequential(nn.Linear(set_dim, hidden), nn.ReLU())
        self.qkv = nn.Linear(hidden, 3 * hidden)  # one attention head, written out: IDSPN differentiates
        # through g's gradient (second order), which torch's fused attention kernels do not support
        self.project = nn.Linear(hidden, latent)
        self.pool = FSPool(latent, set_size=set_size) if pooling == "fspool" else SumPool()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.embed(x)  # (B, N, H)
        q, k, v = self.qkv(h).chunk(3, dim=-1)  # (B, N, H) each
        scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5  # (B, N, N)
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))  # padding is never attended to
        a = scores.softmax(dim=-1) @ v  # (B, N, H)
        h = self.project(torch.relu(h + a))  # (B, N, L)
        return self.pool(h, mask, duplicate_index(x))  # (B, L)


def decoder(pooling: str, backward: str = "approx", iters: int = 10) -> IDSPN:
    torch.manual_seed(0)
    g = AttentionEncoder(set_dim=3, hidden=16, latent=8, set_size=6, pooling=pooling).double()
    # cg_gamma=1: the regularised solve of Appendix D. (None, the exact implicit gradient, needs a
    # positive definite Hessian at Y*: an untrained g like this one gives none, and CG goes astray.)
    return IDSPN(g, set_size=6, set_dim=3, iters=iters, lr=1.0, momentum=0.5, backward=backward, cg_gamma=1.0).double()


def equivariance(pooling: str, trials: int) -> str:
    """How the decoder, as a function of its initial set Y0 ``(N, D) -> (N, D)``, treats permutations."""
    dec = decoder(pooling)
    z = torch.randn(1, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return classify_equivariance(lambda y0: dec(z, init_set=y0[None])[0].detach(), 6, 3, trials=trials).value


def gradients(iters: int) -> None:
    """The unrolled gradient is the exact one (gradcheck); approx and cg are compared against it."""
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(2, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    y0 = torch.randn(2, 6, 3, dtype=torch.float64, generator=gen) * 0.3
    target = torch.randn(2, 6, 3, dtype=torch.float64, generator=gen)
    exact = decoder("fspool", "unroll", iters)
    ok = torch.autograd.gradcheck(lambda z: exact(z, init_set=y0), (z,), eps=1e-6, atol=1e-5)
    print(f"gradcheck of backward='unroll' through {iters} inner steps: {'passed' if ok else 'FAILED'}")

    def grad_of_z(dec: IDSPN) -> Tensor:
        (g,) = torch.autograd.grad((dec(z, init_set=y0) - target).pow(2).sum(), z)
        return g.flatten()

    reference = grad_of_z(exact)
    for backward in ("approx", "cg"):
        cosine = torch.cosine_similarity(grad_of_z(decoder("fspool", backward, iters)), reference, dim=0)
        print(f"backward={backward!r}: cosine similarity of dLoss/dz with the unrolled gradient {cosine:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="fewer trials and inner steps")
    args = parser.parse_args()
    for pooling in ("fspool", "sum"):
        print(
            f"IDSPN with the attention encoder and {pooling} pooling: {equivariance(pooling, 2 if args.smoke else 8)}"
        )
    gradients(iters=4 if args.smoke else 20)


if __name__ == "__main__":
    main()
