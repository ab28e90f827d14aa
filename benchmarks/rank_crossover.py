"""Up to which set size counting beats sorting for FSPool's eager weights on CPU: ``COUNTING_MAX_EAGER``.

At every inner step FSPool looks up each element's weight at its rank (``ranking.lookup_by_rank``).
Eagerly on CPU a short set is ranked by counting, one element against the rest of its set at a
time (``N`` small kernels, ``O(N^2)`` work), and the table is gathered at the ranks; a longer set is
sorted through the chosen backend (NumPy's integer sort or ``torch.sort``), its ranks the inverse
of the sort's order, and the table is gathered at them. This script times the three ways on
``(B, N, L)`` features for a range of set sizes, all in turn in one process, and prints for each
backend the largest size at which counting is faster: at most the value ``COUNTING_MAX_EAGER``
should hold on the machine and thread count it runs on.

Usage::

    python benchmarks/rank_crossover.py [--sizes 4 8 12 16 24 32] [--batch 128] [--features 512] [--threads 2]
        [--out FILE.md]
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable
from pathlib import Path

import numpy
import torch

from idspn_experiments.engine.io import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_benchmark import machine_label, time_parts  # noqa: E402

WAYS = ("counting", "numpy sort", "torch sort")


def ways_at(n: int, batch: int, features: int) -> dict[str, Callable[[], object]]:
    """The eager rank computations to time for sets of ``n`` elements."""
    from idspn import ranking

    x = torch.randn(batch, n, features)
    x[:, n // 2] = x[:, 0]  # one exact tie per set, as duplicates give
    full = torch.randn(1, n, features).expand_as(x)  # FSPool's table of weights by rank

    def sorted_by(backend: str) -> Callable[[], object]:
        def lookup() -> object:
            with ranking.use_sort_backend(backend):
                return full.gather(1, ranking._ranks_by_sorting(x))

        return lookup

    return {
        f"{n}/counting": lambda: full.gather(1, ranking._ranks_by_elements(x)),
        f"{n}/numpy sort": sorted_by("numpy"),
        f"{n}/torch sort": sorted_by("torch"),
    }


def crossover(ms: dict[str, float], sizes: list[int], way: str) -> str:
    """The largest size at which counting beats ``way`` (a size that noise lets one way win out of
    turn below it does not end the search), said as ``up to N = ...``."""
    wins = [n for n in sizes if ms[f"{n}/counting"] < ms[f"{n}/{way}"]]
    if not wins:
        return "at no size tried"
    if wins[-1] == sizes[-1]:
        return f"up to at least N = {wins[-1]}, the largest size tried"
    return f"up to N = {wins[-1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 12, 16, 24, 32])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--features", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=20, help="timed calls of every way (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", default=None, help="write the markdown report here")
    args = parser.parse_args(argv)
    if any(n < 2 for n in args.sizes) or args.rounds < 1 or args.batch < 1 or args.features < 1:
        parser.error("--sizes must be >= 2 and --rounds, --batch, --features >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = sorted(set(args.sizes))
    parts: dict[str, Callable[[], object]] = {}
    for n in sizes:
        parts.update(ways_at(n, args.batch, args.features))
    ms = time_parts(parts, torch.device("cpu"), args.rounds)
    lines = [
        f"# Counting or sorting, {datetime.date.today().isoformat()}",
        "",
        f"Machine: {machine_label(torch.device('cpu'))}; torch {torch.__version__}, numpy {numpy.__version__}, "
        f"{args.threads} threads, "
        f"(B, N, L) = ({args.batch}, N, {args.features}), median of {args.rounds} calls (ms).",
        "",
        "| N | " + " | ".join(WAYS) + " |",
        "| --- | " + " | ".join("---" for _ in WAYS) + " |",
    ]
    lines += [f"| {n} | " + " | ".join(f"{ms[f'{n}/{w}']:.2f}" for w in WAYS) + " |" for n in sizes]
    lines.append("")
    for backend, way in (("numpy", "numpy sort"), ("torch", "torch sort")):
        lines.append(f"- counting beats the {backend} backend's sort {crossover(ms, sizes, way)}")
    report = "\n".join(lines) + "\n"
    print(report, end="")
    if args.out:
        atomic_write_text(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
