"""Print (and optionally plot) a run's validation curve from its ``metrics.jsonl``.

    python scripts/learning_curve.py RUN_DIR [--metrics accuracy element_accuracy] [--plot curve.png]

One markdown row per validation step (step, wall time so far, each metric), then the test record
if the run finished.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_records(run_dir: Path) -> list[dict]:
    """Every complete JSON record of ``run_dir/metrics.jsonl`` (a torn last line is skipped)."""
    records = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--metrics", nargs="+", default=["accuracy", "element_accuracy"])
    parser.add_argument("--plot", type=Path, default=None, help="also draw the curve into this PNG")
    args = parser.parse_args(argv)
    records = read_records(args.run_dir)
    elapsed, rows = 0.0, []
    for record in records:
        if record["split"] == "train":
            elapsed += record.get("time_s", 0.0)
        elif record["split"] in ("val", "test"):
            rows.append((record["split"], record["step"], elapsed, [record.get(m) for m in args.metrics]))
    print("| split | step | training time (min) | " + " | ".join(args.metrics) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in args.metrics) + " |")
    for split, step, seconds, values in rows:
        cells = " | ".join("-" if v is None else f"{v:.4f}" for v in values)
        print(f"| {split} | {step} | {seconds / 60:.1f} | {cells} |")
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        val = [r for r in rows if r[0] == "val"]
        for i, name in enumerate(args.metrics):
            ax.plot([r[1] for r in val], [r[3][i] for r in val], marker="o", label=name)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
