"""Predict point sets of 1..N elements with iDSPN: a set autoencoder for sets of varying size.

Each set holds between 1 and N points in the unit square. Sets of different sizes share one
tensor: a set is padded to N elements and every element carries a presence flag as its last
dimension (1 = a point, 0 = padding), so an element is ``[x, y, presence]``.

* The input encoder reads the padded target set with a mask (``FSEncoder(x, mask)``: padding never
  enters the pooling) and produces z.
* The decoder ``IDSPN`` always predicts N elements; the presence dimension says which are real.
* The Hungarian loss matches the N predictions to the N padded targets: a prediction matched to a
  padding element learns presence 0 (its coordinates are pulled to the padding's zeros, which is
  harmless: they are dropped at read-out).

    python examples/variable_size_sets.py            # about 4 minutes on 2 CPU cores
    python examples/variable_size_sets.py --smoke    # a few seconds
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn

from idspn import IDSPN, FSEncoder, hungarian_loss

MAX_SIZE, DIM = 6, 3  # up to 6 points; x, y, presence


def random_sets(batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Padded point sets ``(B, N, 3)`` and their masks ``(B, N)``: each set has 1..N points."""
    sizes = torch.randint(1, MAX_SIZE + 1, (batch,), generator=generator)
    mask = torch.arange(MAX_SIZE) < sizes.unsqueeze(1)  # (B, N)
    points = torch.rand(batch, MAX_SIZE, 2, generator=generator) * mask.unsqueeze(-1)  # padding at 0
    return torch.cat([points, mask.unsqueeze(-1).float()], dim=-1), mask


class SetAutoencoder(nn.Module):
    """Padded set -> z -> predicted set, both ``(B, N, 3)``."""

    def __init__(self, latent: int = 128, hidden: int = 128, iters: int = 20) -> None:
        super().__init__()
        self.encoder = FSEncoder(DIM, hidden, latent)  # variable-size input: piecewise FSPool weights
        g = FSEncoder(DIM, hidden, latent, set_size=MAX_SIZE)  # the decoder's set always has N elements
        self.decoder = IDSPN(g, set_size=MAX_SIZE, set_dim=DIM, iters=iters, lr=1.0, momentum=0.9, grad_clip=10.0)

    def forward(self, target: Tensor, mask: Tensor) -> Tensor:
        return self.decoder(self.encoder(target, mask))


def read_out(pred: Tensor) -> list[Tensor]:
    """The points ``(k, 2)`` of each predicted set: the elements with presence above 0.5."""
    return [p[p[:, 2] > 0.5, :2] for p in pred]


def plot(target: Tensor, mask: Tensor, pred: Tensor, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(10, 5))
    for ax, t, m, p in zip(axes.flat, target, mask, read_out(pred), strict=False):
        ax.scatter(*t[m, :2].T, s=90, facecolors="none", edgecolors="black", label="target")
        ax.scatter(*p.T, s=20, color="tab:red", label="prediction")
        ax.set(
            xlim=(-0.1, 1.1),
            ylim=(-0.1, 1.1),
            xticks=[],
            yticks=[],
            title=f"{int(m.sum())} point{'s' * (int(m.sum()) > 1)}",
        )
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="upper center", ncol=2)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--plot", default="variable_size_sets.png", help="where to write the picture")
    parser.add_argument("--smoke", action="store_true", help="a few steps, to check that it runs")
    args = parser.parse_args()
    steps = 20 if args.smoke else args.steps

    torch.manual_seed(0)
    data = torch.Generator().manual_seed(0)
    model = SetAutoencoder(iters=5 if args.smoke else 20)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(1, steps + 1):
        target, mask = random_sets(args.batch_size, data)
        loss = hungarian_loss(model(target, mask), target, pairwise="huber")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, steps // 10) == 0:
            print(f"step {step:5d}  Hungarian loss {loss.item():.4f}")

    model.eval()
    target, mask = random_sets(1000, torch.Generator().manual_seed(1))  # held-out sets
    with torch.no_grad():
        pred = model(target, mask)
    sizes_right = sum(len(p) == int(m.sum()) for p, m in zip(read_out(pred), mask, strict=True)) / len(mask)
    print(
        f"held-out sets: loss {hungarian_loss(pred, target, pairwise='huber').item():.4f}, size right {sizes_right:.1%}"
    )
    plot(target[:8], mask[:8], pred[:8], args.plot)


if __name__ == "__main__":
    main()
