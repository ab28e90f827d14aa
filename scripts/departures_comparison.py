"""Train the small presets with the original code's choices and with this project's earlier ones, over seeds.

Where the paper is silent the presets follow the original code: FSPool tables drawn with std
1/sqrt(N), the initial set projected onto the simplex before the first step (numbering), the
regulariser averaged over the set's entries (autoencoding). The project used to draw the tables
from N(0, 1), take the first step from the raw initial set and sum the regulariser. This script
trains both on the small budget's task for a few seeds and prints the comparison that
docs/departures.md quotes:

* numbering: iDSPN at the small budget (sets of 16, 640 training sets, 1,000 steps); test sample
  and element accuracy of the model selected by validation accuracy;
* autoencoding: iDSPN with momentum at n = d = 8, 20 iterations, 750 steps; held-out Huber loss.

Runs are written to ``OUT/<task>/<variant>/seed<k>/`` and skipped when finished, so an interrupted
comparison continues where it stopped::

    python scripts/departures_comparison.py --out results/departures --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from idspn_experiments.engine.config import load_config
from idspn_experiments.engine.train import fit, load_run_result
from idspn_experiments.registry import get_experiment

VARIANTS = {
    "numbering": (
        "numbering-small",
        "accuracy",
        {
            "original": ("model.fspool_init=fan_out", "model.project_init=true"),
            "earlier": ("model.fspool_init=normal", "model.project_init=false"),
        },
    ),
    "autoencoding": (
        "autoencoding-small",
        "loss",
        {
            "original": ("model.fspool_init=fan_out", "model.reg_reduction=mean"),
            "earlier": ("model.fspool_init=normal", "model.reg_reduction=sum"),
        },
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    lines = [
        "| task | variant | metric | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |",
        "| --- | --- | --- | " + " | ".join("---" for _ in args.seeds) + " | --- |",
    ]
    for task in args.tasks:
        preset, metric, variants = VARIANTS[task]
        experiment = get_experiment(task)
        for variant, overrides in variants.items():
            values = []
            for seed in args.seeds:
                cfg = load_config(experiment.config_type, preset, [*overrides, f"seed={seed}"])
                run_dir = args.out / task / variant / f"seed{seed}"
                result = load_run_result(run_dir) or fit(
                    experiment, cfg, run_dir, resume=True, progress=not args.no_progress
                )
                assert result is not None and result.test is not None
                values.append(result.test[metric])
                print(f"{task} {variant} seed {seed}: test {metric} {values[-1]:.4f}", file=sys.stderr, flush=True)
            scale, unit = (100.0, "%") if metric == "accuracy" else (1e3, " x1e-3")
            cells = " | ".join(f"{scale * v:.2f}" for v in values)
            lines.append(
                f"| {task} | {variant} | test {metric}{unit} | {cells} | {scale * statistics.mean(values):.2f} |"
            )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
