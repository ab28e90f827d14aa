"""Pictures like Tables 9 and 10: validation images beside their objects and predictions at 10/20/40 steps.

For each chosen validation image the picture shows the image, its ground-truth objects and the
predictions of a trained model, one column per number of inner steps (iDSPN/DSPN: 10, 20 and 40
by default, all from the same random initial set; the baselines have one column). Every predicted
object is the one matched to the ground-truth object by the Hungarian matching of Eq. 44 (Huber
pairwise loss), written as its 3d coordinates with the distance ``d`` to the ground truth and
its presence confidence ``p``, then its size, colour, material and shape. As in the paper,
attributes that differ from the ground truth and distances over 0.25 are marked in red (and bold);
so is a matched prediction the model calls absent (``p < 0.5``). Objects predicted present but
matched to no ground-truth object are counted below the column.

Command line (a checkpoint of any CLEVR run; ``key=value`` overrides as in ``idspn eval``)::

    python -m idspn_experiments.clevr.figures RUN/best.pt --out pictures.png [--images 0 1 2] [--iters 10 20 40]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from idspn import hungarian_match
from idspn_experiments.clevr.config import ClevrConfig
from idspn_experiments.clevr.data import CLEVRDataset
from idspn_experiments.clevr.layout import ATTRIBUTES, LAYOUT, targets_to_range, to_range
from idspn_experiments.clevr.task import CLEVR_MODELS, build_model, inner_steps, predict
from idspn_experiments.engine.spec import DataSplits

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DecodedObject",
    "Example",
    "decode_object",
    "describe_examples",
    "draw_examples",
    "examples_figure",
    "validation_figure",
    "draw_checkpoint",
    "main",
]

DISTANCE_MARK = 0.25  # distances above this are marked (Tables 9 and 10)
_RED, _BLACK, _GREY = "#c62828", "#111111", "#777777"
_FONT_SIZE = 7.0  # points; monospace, so a character is 0.6 em wide
_CHAR_IN = 0.6 * _FONT_SIZE / 72  # width of one character in inches
_LINE_IN = 1.35 * _FONT_SIZE / 72  # height of one line in inches
_COLUMN_CHARS = 36


@dataclass(frozen=True)
class DecodedObject:
    """One object vector in words: coordinates in the original units and the four attributes."""

    coords: tuple[float, float, float]  # 3d coordinates in [-3, 3]
    attributes: dict[str, str]  # "material", "color", "shape", "size" -> value
    presence: float  # presence flag (targets) or confidence (predictions)

    def distance(self, other: DecodedObject) -> float:
        return sum((a - b) ** 2 for a, b in zip(self.coords, other.coords, strict=True)) ** 0.5


def decode_object(vector: Tensor) -> DecodedObject:
    """Decode a stored object vector ``(D,)`` (coordinates in [-1, 1], one-hot or score groups)."""
    coords = (vector[LAYOUT.coords] * LAYOUT.coord_scale).tolist()
    attributes = {
        field: vocabulary[int(vector[group].argmax())]
        for (field, vocabulary), group in zip(ATTRIBUTES, LAYOUT.attributes, strict=True)
    }
    return DecodedObject((coords[0], coords[1], coords[2]), attributes, float(vector[LAYOUT.presence]))


@dataclass
class Example:
    """One row of the picture: an image, its objects and the matched predictions per column."""

    image_path: Path  # the original PNG
    index: int  # position in the validation split
    truth: list[DecodedObject]  # present ground-truth objects
    columns: dict[str, list[DecodedObject]]  # column title -> the prediction matched to each truth object
    extra: dict[str, int]  # column title -> predictions marked present but matched to no object


@torch.no_grad()
def describe_examples(
    model: nn.Module,
    cfg: ClevrConfig,
    dataset: CLEVRDataset,
    indices: Sequence[int],
    iters: Sequence[int] = (10, 20, 40),
) -> list[Example]:
    """Predict and match the chosen validation images.

    Args:
        model: a trained model built from ``cfg`` (put in eval mode here).
        cfg: its config.
        dataset: the validation ``CLEVRDataset`` (items ``(image, target)``, attribute ``image_paths``).
        indices: which images.
        iters: inner steps of each column (iDSPN/DSPN only; the baselines get one column).
    """
    model.eval()
    items = [dataset[i] for i in indices]  # each image decoded once
    images = torch.stack([image for image, _ in items])  # (B, 3, S, S)
    targets = torch.stack([target for _, target in items])  # (B, N, D)
    device = next(model.parameters()).device
    inner_loop = CLEVR_MODELS[cfg.model.name].inner_loop
    steps: list[int | None] = list(iters) if inner_loop else [None]
    examples = [
        Example(
            Path(dataset.image_paths[i]),
            i,
            [decode_object(t) for t in targets[b] if t[LAYOUT.presence] > 0.5],
            {},
            {},
        )
        for b, i in enumerate(indices)
    ]
    for k in steps:
        torch.manual_seed(0)  # the same initial set in every column
        pred = predict(model, images.to(device), cfg, iters=k).cpu()  # (B, N, D), stored layout
        match = hungarian_match(
            to_range(pred, cfg.model.coord_range), targets_to_range(targets, cfg.model.coord_range), pairwise="huber"
        )  # (B, N): target of each prediction
        label = CLEVR_MODELS[cfg.model.name].label
        title = f"{label} {k} iterations" if k is not None else label
        for b, example in enumerate(examples):
            present = targets[b, :, LAYOUT.presence] > 0.5  # (N,)
            by_target = {int(match[b, i]): i for i in range(match.shape[1])}
            example.columns[title] = [decode_object(pred[b, by_target[j]]) for j in range(len(present)) if present[j]]
            example.extra[title] = sum(
                1 for i in range(match.shape[1]) if not present[int(match[b, i])] and pred[b, i, LAYOUT.presence] >= 0.5
            )
    return examples


# --- drawing -----------------------------------------------------------------------------------

Token = tuple[str, str, bool]  # text, colour, bold


def _object_lines(obj: DecodedObject, truth: DecodedObject | None) -> list[list[Token]]:
    coords = "(" + " ".join(f"{c:.2f}" for c in obj.coords) + ")"
    first: list[Token] = [(coords, _BLACK, False)]
    if truth is not None:
        d = obj.distance(truth)
        first.append((f" d={d:.2f}", _RED if d > DISTANCE_MARK else _BLACK, d > DISTANCE_MARK))
        first.append((f" p={obj.presence:.2f}", _RED if obj.presence < 0.5 else _GREY, obj.presence < 0.5))
    second: list[Token] = []
    for field in ("size", "color", "material", "shape"):
        wrong = truth is not None and obj.attributes[field] != truth.attributes[field]
        if second:
            second.append((" ", _BLACK, False))
        second.append((obj.attributes[field], _RED if wrong else _BLACK, wrong))
    return [first, second]


def _draw_tokens(ax: Axes, x: float, y: float, tokens: list[Token]) -> None:
    for text, colour, bold in tokens:
        ax.text(
            x,
            y,
            text,
            color=colour,
            fontweight="bold" if bold else "normal",
            family="monospace",
            fontsize=_FONT_SIZE,
            va="top",
            ha="left",
        )
        x += len(text)


def draw_examples(examples: Sequence[Example], out: str | Path, title: str = "") -> Path:
    """Write the picture of ``examples`` to ``out`` (PNG, or any format matplotlib knows by extension)."""
    import matplotlib.pyplot as plt

    fig = examples_figure(examples, title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def examples_figure(examples: Sequence[Example], title: str = "") -> Figure:
    """The picture of ``examples``: each image beside its objects and the predictions per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    if not examples:
        raise ValueError("examples must not be empty")
    column_titles = ["ground truth", *examples[0].columns]
    text_chars = _COLUMN_CHARS * len(column_titles)
    image_w, gap, margin = 3.0, 0.35, 0.15
    text_w = text_chars * _CHAR_IN
    heights = [(2 + 2 * len(e.truth) + 1) * _LINE_IN for e in examples]  # header, objects, extra counts
    heights = [max(h, image_w * 2 / 3) + gap for h in heights]
    title_h = 0.3 if title else 0.0
    fig_w, fig_h = margin * 2 + image_w + gap + text_w, margin * 2 + title_h + sum(heights)
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=150)
    if title:
        fig.text(margin / fig_w, 1 - margin / fig_h, title, fontsize=9, va="top", ha="left")
    top = fig_h - margin - title_h
    for example, height in zip(examples, heights, strict=True):
        top -= height
        image_h = image_w * 2 / 3  # CLEVR images are 480x320
        ax_img = fig.add_axes(
            ((margin) / fig_w, (top + height - image_h - gap) / fig_h, image_w / fig_w, image_h / fig_h)
        )
        with Image.open(example.image_path) as image:
            ax_img.imshow(image.convert("RGB"))
        ax_img.set_axis_off()
        ax_img.set_title(f"val image {example.index}", fontsize=_FONT_SIZE, loc="left")
        text_h = height - gap
        lines = text_h / _LINE_IN
        ax = fig.add_axes(((margin + image_w + gap) / fig_w, (top) / fig_h, text_w / fig_w, text_h / fig_h))
        ax.set_xlim(0, text_chars)
        ax.set_ylim(lines, 0)
        ax.set_axis_off()
        for c, column in enumerate(column_titles):
            x = c * _COLUMN_CHARS
            _draw_tokens(ax, x, 0, [(column, _BLACK, True)])
            objects = example.truth if column == "ground truth" else example.columns[column]
            for o, obj in enumerate(objects):
                truth = None if column == "ground truth" else example.truth[o]
                for k, tokens in enumerate(_object_lines(obj, truth)):
                    _draw_tokens(ax, x, 1.5 + 2 * o + k, tokens)
            extra = example.extra.get(column, 0)
            if extra:
                _draw_tokens(ax, x, 1.5 + 2 * len(objects), [(f"+{extra} extra predicted", _RED, True)])
    return fig


def validation_figure(model: nn.Module, data: DataSplits, cfg: ClevrConfig, images: int = 2) -> Figure:
    """The first ``images`` validation images with the predictions at the evaluation step count
    (``Experiment.figure`` of CLEVR: TensorBoard's ``val/predictions``)."""
    dataset = data.test
    if not isinstance(dataset, CLEVRDataset):
        raise ValueError(f"data.test must be the CLEVR validation split, got {type(dataset).__name__}")
    iters = (inner_steps(cfg, None),)
    examples = describe_examples(model, cfg, dataset, range(min(images, len(dataset))), iters)
    return examples_figure(examples)


def draw_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    images: Sequence[int] | None = None,
    iters: Sequence[int] = (10, 20, 40),
    overrides: Sequence[str] = (),
) -> Path:
    """The picture of a CLEVR checkpoint (``best.pt`` or ``last.pt``) on the chosen validation images.

    ``images`` defaults to the first three validation images (fewer if the split is smaller).

    Raises:
        ValueError: for a checkpoint of another experiment or an image index outside the split.
    """
    from idspn_experiments.clevr.data import clevr_split, dataset_dir
    from idspn_experiments.engine.checkpoint import load_checkpoint
    from idspn_experiments.engine.config import apply_overrides, config_from_dict

    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("experiment") != "clevr":
        raise ValueError(f"checkpoint must be of the 'clevr' experiment, got {ckpt.get('experiment')!r}")
    cfg = apply_overrides(config_from_dict(ClevrConfig, ckpt["config"]), list(overrides))
    dataset = clevr_split(cfg, dataset_dir(cfg, progress=False), "val", progress=False)
    images = list(range(min(3, len(dataset)))) if images is None else list(images)
    bad = [i for i in images if not 0 <= i < len(dataset)]
    if bad:
        raise ValueError(f"images must be in [0, {len(dataset)}), got {bad}")
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    examples = describe_examples(model, cfg, dataset, images, iters)
    title = f"{checkpoint} (step {ckpt.get('step', '?')}, {cfg.data.image_size}x{cfg.data.image_size} px input)"
    return draw_examples(examples, out, title)


# --- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m idspn_experiments.clevr.figures CHECKPOINT --out FILE [options] [key=value ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m idspn_experiments.clevr.figures", description=__doc__.split("\n")[0]
    )
    parser.add_argument("checkpoint", type=Path, help="best.pt or last.pt of a CLEVR run")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. device=cpu")
    parser.add_argument("--out", type=Path, required=True, help="picture file (.png, .svg, .pdf)")
    parser.add_argument("--images", type=int, nargs="+", default=None, help="validation image indices (default 0 1 2)")
    parser.add_argument("--iters", type=int, nargs="+", default=[10, 20, 40], help="inner steps per column")
    args = parser.parse_args(argv)
    try:
        path = draw_checkpoint(args.checkpoint, args.out, args.images, args.iters, args.overrides)
    except ValueError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
