"""PNG figures of an autoencoding sweep in the style of the paper's Figures 1-4 (matplotlib, no display).

* ``figure1.png`` (Figure 1): losses at equal iterations, at roughly equal compute (DSPN at t
  iterations vs iDSPN at 2t), and of the pooling ablation (Table 6), one group of bars per (n, d).
* ``figure2.png`` / ``figure3.png`` (Figures 2 and 3): loss relative to DSPN at 10 iterations, one
  panel per n (bars grouped by d) and one panel per d (bars grouped by n). Bars are ordered per
  iteration count as iDSPN+mom, iDSPN, DSPN, like the paper's, so that "equal iterations" is the
  two bars left of an orange DSPN bar and "equal compute" the two bars right of it.
* ``figure4.png`` (Figure 4, Appendix G): example reconstructions of DSPN and iDSPN+mom at 20
  iterations on sets from neither split; the first two dims of every element, target as circles,
  prediction as crosses, matched pairs joined.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from idspn import hungarian_match
from idspn_experiments.autoencoding.config import AutoencodingConfig
from idspn_experiments.autoencoding.data import make_random_sets
from idspn_experiments.autoencoding.models import MODEL_KINDS, build_autoencoder
from idspn_experiments.autoencoding.report import Cell
from idspn_experiments.autoencoding.tables import POOLING_KINDS, TABLE5_KINDS, GridPoint
from idspn_experiments.engine.checkpoint import load_checkpoint
from idspn_experiments.engine.config import config_from_dict

__all__ = ["COLORS", "write_figures", "plot_overview", "plot_relative", "plot_reconstructions"]

Cells = dict[GridPoint, Cell]
Series = tuple[str, str, float, list[float | None]]  # label, colour, alpha, one value (or None) per bar group

# DSPN is orange as in the paper; the ablations in warm colours next to iDSPN+mom's blue.
COLORS = {
    "idspn-mom": "tab:blue",
    "idspn": "tab:green",
    "dspn": "tab:orange",
    "idspn-mom-sum": "tab:red",
    "idspn-mom-mean": "tab:purple",
}
_SHADE = {10: 0.45, 20: 0.72, 40: 1.0}  # fewer iterations: lighter bar
# Cells shown in Figures 1 and 4 when there are more, in this order (the small budget's four first).
_OVERVIEW_CELLS = ((2, 2), (4, 4), (8, 8), (4, 16), (16, 4), (8, 16), (16, 16), (32, 32))
_EXAMPLE_CELLS = ((2, 2), (4, 4), (8, 8), (4, 16), (32, 2), (16, 16))


def _preferred(
    available: Sequence[tuple[int, int]], order: Sequence[tuple[int, int]], limit: int
) -> list[tuple[int, int]]:
    """Up to ``limit`` of the available (n, d) cells: those in ``order`` first, then the rest sorted."""
    chosen = [nd for nd in order if nd in available] + sorted(set(available) - set(order))
    return sorted(chosen[:limit])


def _tick_label(value: float, position: int | None = None) -> str:
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}" if int(exponent) else mantissa.rstrip("0").rstrip(".")


def _minor_tick_label(value: float, position: int | None = None) -> str:
    mantissa = float(f"{value:.1e}".split("e")[0])
    return _tick_label(value) if mantissa in (2.0, 5.0) else ""


def _positive(values: Sequence[float | None]) -> list[tuple[int, float]]:
    """``(group, value)`` of the values that are set and above 0: what a log axis can show."""
    return [(g, v) for g, v in enumerate(values) if v is not None and v > 0]


def _bars(ax: Axes, groups: Sequence[str], series: Sequence[Series], ylabel: str, title: str) -> None:
    """Grouped bars on a log axis, one bar per series in every group."""
    width = 0.8 / max(1, len(series))
    for i, (label, color, alpha, values) in enumerate(series):
        shown = _positive(values)
        xs = [g + (i - (len(series) - 1) / 2) * width for g, _ in shown]
        ys = [v for _, v in shown]
        ax.bar(xs, ys, width=width, color=color, alpha=alpha, edgecolor="black", linewidth=0.4, label=label)
    ax.set_yscale("log")
    heights = [v for _, _, _, vs in series for _, v in _positive(vs)]
    if heights:  # room below the lowest bar, so that it does not look empty on the log axis
        low, high = min(heights) / 2.5, max(heights) * 1.4
        ax.set_ylim(low, high)
        # plain "2e-2" labels (matplotlib's mathtext ones are slow to draw); the 2x and 5x ticks
        # are labelled too when the axis spans less than two decades
        ax.yaxis.set_major_formatter(FuncFormatter(_tick_label))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_tick_label) if high < 100 * low else NullFormatter())
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", which="major", alpha=0.3)


def _mean(cells: Cells, point: GridPoint) -> float | None:
    cell = cells.get(point)
    return cell.mean if cell is not None and cell.losses else None


def plot_overview(cells: Cells, path: Path) -> Path | None:
    """Figure 1: equal iterations, equal compute and pooling, one bar group per (n, d) (at most 8)."""
    iters = sorted({p.iters for p in cells})
    if not iters:
        return None
    at = 20 if 20 in iters else iters[-1]
    t = iters[0]
    cell_keys = _preferred(sorted({(p.set_size, p.set_dim) for p in cells}), _OVERVIEW_CELLS, 8)

    def series(keys: list[tuple[int, int]], entries: Sequence[tuple[str, str, int]]) -> list[Series]:
        return [
            (label, COLORS[kind], 1.0, [_mean(cells, GridPoint(n, d, its, kind)) for n, d in keys])
            for label, kind, its in entries
        ]

    panels = [
        (
            f"Equal iterations ({at})",
            cell_keys,
            series(cell_keys, [(MODEL_KINDS[k].label, k, at) for k in TABLE5_KINDS]),
        )
    ]
    if 2 * t in iters:
        entries = [
            (f"{MODEL_KINDS[k].label} ({its} it.)", k, its)
            for k, its in (("dspn", t), ("idspn", 2 * t), ("idspn-mom", 2 * t))
        ]
        panels.append((f"Equal compute (DSPN {t} it. vs iDSPN {2 * t} it.)", cell_keys, series(cell_keys, entries)))
    pooling_keys = [(n, d) for n, d in cell_keys if any(GridPoint(n, d, at, k) in cells for k in POOLING_KINDS)]
    if pooling_keys:
        entries = [("FSPool", "idspn-mom", at), ("Sum", "idspn-mom-sum", at), ("Mean", "idspn-mom-mean", at)]
        panels.append((f"Pooling, iDSPN+mom ({at} it.)", pooling_keys, series(pooling_keys, entries)))
    fig = Figure(figsize=(4.2 * len(panels), 4.2), layout="constrained")
    for ax, (title, keys, bars) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        _bars(ax, [f"n={n}\nd={d}" for n, d in keys], bars, "reconstruction loss", title)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(bars), frameon=False)
    fig.savefig(path, dpi=130)
    return path


def plot_relative(cells: Cells, path: Path, fixed: str) -> Path | None:
    """Figures 2 (``fixed="n"``) and 3 (``fixed="d"``): loss relative to DSPN at 10 iterations.

    Cells without a DSPN run at 10 iterations have nothing to normalise by and are left out.

    Raises:
        ValueError: unless ``fixed`` is "n" or "d".
    """
    if fixed not in ("n", "d"):
        raise ValueError(f"fixed must be 'n' or 'd', got {fixed!r}")
    base = {
        (p.set_size, p.set_dim): c.mean for p, c in cells.items() if p.kind == "dspn" and p.iters == 10 and c.losses
    }
    if not base:
        return None
    iters = sorted({p.iters for p in cells if p.kind in TABLE5_KINDS})
    outer = sorted({nd[0] if fixed == "n" else nd[1] for nd in base})
    fig = Figure(figsize=(min(3.6 * len(outer), 18) + 1.8, 3.8), layout="constrained")
    axes = fig.subplots(1, len(outer), squeeze=False)[0]
    for ax, value in zip(axes, outer, strict=True):
        keys = sorted(nd for nd in base if (nd[0] if fixed == "n" else nd[1]) == value)
        inner_name = "d" if fixed == "n" else "n"
        groups = [f"{inner_name}={nd[1] if fixed == 'n' else nd[0]}" for nd in keys]
        series = []
        for its in iters:
            for kind in TABLE5_KINDS:
                values = []
                for n, d in keys:
                    mean = _mean(cells, GridPoint(n, d, its, kind))
                    values.append(None if mean is None else mean / base[(n, d)])
                label = f"it={its} {MODEL_KINDS[kind].label}"
                series.append((label, COLORS[kind], _SHADE.get(its, 1.0), values))
        _bars(ax, groups, series, "loss / DSPN it=10", f"{fixed}={value}")
        ax.axhline(1.0, color="black", linewidth=0.6)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=7, frameon=False)
    fig.savefig(path, dpi=130)
    return path


def _load_model(run_dir: str) -> tuple[torch.nn.Module, AutoencodingConfig]:
    cfg = config_from_dict(AutoencodingConfig, json.loads((Path(run_dir) / "config.json").read_text()))
    model = build_autoencoder(cfg)
    model.load_state_dict(load_checkpoint(Path(run_dir) / "best.pt")["model"])
    return model.eval(), cfg


@torch.no_grad()
def plot_reconstructions(cells: Cells, path: Path, max_cells: int = 4) -> Path | None:
    """Figure 4: one held-out set per (n, d), reconstructed by DSPN and iDSPN+mom at 20 iterations."""
    iters = sorted({p.iters for p in cells})
    if not iters:
        return None
    at = 20 if 20 in iters else iters[-1]
    kinds = ("dspn", "idspn-mom")
    available = {
        (p.set_size, p.set_dim) for p in cells if all(GridPoint(p.set_size, p.set_dim, at, k) in cells for k in kinds)
    }
    chosen = _preferred(sorted(available), _EXAMPLE_CELLS, max_cells)
    if not chosen:
        return None
    fig = Figure(figsize=(3.0 * len(kinds), 2.9 * len(chosen)), layout="constrained")
    axes = fig.subplots(len(chosen), len(kinds), squeeze=False)
    for row, (n, d) in zip(axes, chosen, strict=True):
        for ax, kind in zip(row, kinds, strict=True):
            cell = cells[GridPoint(n, d, at, kind)]
            model, cfg = _load_model(cell.run_dirs[0])
            target = make_random_sets(1, n, d, cfg.seed, "examples")  # (1, N, D)
            pred = model(target)  # (1, N, D)
            match = hungarian_match(pred, target, "huber")[0]  # (N,)
            t, y = target[0, :, :2], pred[0, :, :2]  # first two dims, as in the paper
            for i in range(n):
                j = int(match[i])
                ax.plot([y[i, 0], t[j, 0]], [y[i, 1], t[j, 1]], color="gray", linewidth=0.6, zorder=1)
            ax.scatter(t[:, 0], t[:, 1], s=36, facecolors="none", edgecolors="black", label="target", zorder=2)
            ax.scatter(y[:, 0], y[:, 1], s=30, marker="x", color=COLORS[kind], label="prediction", zorder=3)
            ax.set_title(f"{MODEL_KINDS[kind].label}, n={n}, d={d}", fontsize=9)
            ax.set_aspect("equal", adjustable="datalim")
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.savefig(path, dpi=130)
    return path


def write_figures(folder: Path, cells: Cells) -> list[Path]:
    """All figures that the finished runs allow, written into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    made = [
        plot_overview(cells, folder / "figure1.png"),
        plot_relative(cells, folder / "figure2.png", fixed="n"),
        plot_relative(cells, folder / "figure3.png", fixed="d"),
        plot_reconstructions(cells, folder / "figure4.png"),
    ]
    return [p for p in made if p is not None]
