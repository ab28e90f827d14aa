"""Image -> set of objects: a torchvision ResNet18, an iDSPN head and the Hungarian loss.

The template of a DETR-style set-prediction head. The data are CLEVR-format scenes (the layout of
the CLEVR v1.0 release: PNGs and a scenes JSON per split) made by the project's generator; each
object becomes a vector ``[x/3, y/3, z/3, material (2), colour (8), shape (3), size (2), presence]``
and every image's set is padded to 10 objects with presence 0. The AP at the distance thresholds of
the paper's Table 3 is computed over the whole validation split with ``idspn.metrics``, and the
accuracy of each attribute shows what the model has learned so far: the default run is a template
to start from, far too short for a good AP (docs/clevr.md: a CLEVR model needs many more scenes
and steps).

    python examples/image_to_set.py            # renders 500 scenes, trains 800 steps: about 10 minutes on 2 cores
    python examples/image_to_set.py --smoke    # 12 scenes, a few steps
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import resnet18

from idspn import IDSPN, FSEncoder, hungarian_loss
from idspn.metrics import attribute_accuracy, set_average_precision
from idspn_experiments.clevr.data import CLEVRDataset
from idspn_experiments.clevr.layout import AP_THRESHOLDS, ATTRIBUTE_NAMES, LAYOUT, MAX_OBJECTS, SET_DIM
from idspn_experiments.clevr_render.generator import generate


def load_split(root: Path, split: str, image_size: int) -> tuple[Tensor, Tensor]:
    """Images ``(B, 3, S, S)`` in [0, 1] and padded object sets ``(B, 10, 19)`` of one split, all in memory."""
    data = CLEVRDataset(root, split, image_size)
    return torch.stack([data[i][0] for i in range(len(data))]), data.targets


class ImageToSet(nn.Module):
    """``(B, 3, S, S)`` image -> ``(B, 10, 19)`` set of objects."""

    def __init__(self, latent: int = 256, iters: int = 10) -> None:
        super().__init__()
        self.backbone = resnet18(weights=None, num_classes=latent)  # any torchvision classifier: z = its output
        g = FSEncoder(SET_DIM, hidden_dim=256, latent_dim=latent, set_size=MAX_OBJECTS)
        self.head = IDSPN(g, set_size=MAX_OBJECTS, set_dim=SET_DIM, iters=iters, lr=1.0, momentum=0.9, grad_clip=10.0)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="clevr-example", help="folder for the generated scenes")
    parser.add_argument("--train", type=int, default=400, help="training scenes")
    parser.add_argument("--val", type=int, default=100, help="validation scenes")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="12 scenes and a few steps, to check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.train, args.val, args.steps, args.image_size = 8, 4, 3, 32

    splits = {"train": args.train, "val": args.val}
    generate(args.data, splits, seed=0, workers=1 if args.smoke else 2)  # resumes; keeps what is there
    root = Path(args.data) / "CLEVR_v1.0"
    train_x, train_y = load_split(root, "train", args.image_size)
    val_x, val_y = load_split(root, "val", args.image_size)

    torch.manual_seed(0)
    model = ImageToSet(iters=4 if args.smoke else 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-4)
    for step in range(1, args.steps + 1):
        batch = torch.randint(len(train_x), (min(32, len(train_x)),))
        loss = hungarian_loss(model(train_x[batch]), train_y[batch], pairwise="huber")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 10) == 0:
            print(f"step {step:5d}  Hungarian loss {loss.item():.4f}")

    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x) for x in val_x.split(50)])
    ap = set_average_precision(pred, val_y, LAYOUT, thresholds=AP_THRESHOLDS[:5])
    print("validation AP: " + ", ".join(f"AP_{t:g} {100 * v:.1f}" for t, v in ap.items()))
    # what a low AP is made of
    accuracy = attribute_accuracy(pred, val_y, LAYOUT, names=ATTRIBUTE_NAMES)
    print("validation accuracy: " + ", ".join(f"{name} {100 * v:.1f}%" for name, v in accuracy.items()))


if __name__ == "__main__":
    main()
