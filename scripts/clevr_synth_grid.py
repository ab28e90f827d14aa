"""Side-by-side look at generated CLEVR images, real CLEVR and the official generator's output.

Writes ``docs/clevr_synth.png``: a row of real CLEVR v1.0 images, a row rendered by the official
Blender generator, and two rows from :func:`idspn_experiments.clevr_render.generator.generate`.

Usage::

    python scripts/clevr_synth_grid.py [--seed 0] [--out docs/clevr_synth.png]
"""

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from idspn_experiments.clevr_render.generator import generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "clevr_synth.png")
    args = parser.parse_args()

    real = sorted((DATA / "clevr-real-samples").glob("*.png"))[:3]
    blender = sorted((DATA / "clevr-blender-val64" / "CLEVR_v1.0" / "images" / "val").glob("*.png"))
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), {"val": 6}, seed=args.seed, workers=1, progress=False)
        ours = sorted((Path(tmp) / "CLEVR_v1.0" / "images" / "val").glob("*.png"))
        rows = [
            ("real CLEVR v1.0", [Image.open(p).convert("RGB") for p in real]),
            ("official generator (Blender)", [Image.open(p).convert("RGB") for p in blender[:3]]),
            ("idspn synth", [Image.open(p).convert("RGB") for p in ours[:3]]),
            ("idspn synth", [Image.open(p).convert("RGB") for p in ours[3:6]]),
        ]
    figure, axes = plt.subplots(len(rows), 3, figsize=(12, 2.7 * len(rows)))
    for (label, images), row in zip(rows, axes, strict=True):
        for image, ax in zip(images, row, strict=True):
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(label)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
