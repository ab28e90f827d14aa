"""How much of a training step its matrix products take: the bound on what faster code can win.

A training step of ``step_benchmark.py`` (same models, same configurations) is run for a few steps
under ``torch.profiler`` after a warm-up, and the wall time of those steps is set against the self
time of their matrix products (``aten::mm``, ``addmm``, ``bmm``, ``baddbmm``; oneDNN's
``mkldnn::_linear_pointwise``) in the same steps;
the largest other items are listed (compiled, inductor's kernels are profiled one by one). With
the products taking a share ``s`` of the step, no rewrite of everything else makes the step more
than ``1 / s`` times faster (short of faster matrix products), so a step that is ``r`` times as
fast as another implementation's gets at most to ``r / s`` times that way.

Both times come from the same steps, so a change of the machine's speed moves them alike. The
profiler adds a cost to every op and kernel it records, which on long steps of many
kernels can add a good part to the step: outside the matrix products, it lowers the share, so
``1 / s`` stays a bound, only a looser one. The table gives the median of as many unprofiled steps
beside the profiled ones. CPU only: on a GPU the matrix products' self time on the host would be
their launch time.

Usage::

    python benchmarks/step_profile.py [--configs numbering/unroll/10 ...] [--impl compiled]
        [--steps 3] [--threads 2] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch
import torch._inductor.config as inductor_config
from torch.profiler import ProfilerActivity, profile

from idspn_experiments.engine.io import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_benchmark import BATCH, build, command_line, machine_label  # noqa: E402

# ATen's products, and oneDNN's (idspn.onednn_linear: FSEncoder's on CPU)
MATRIX_PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise")
DEFAULT_CONFIGS = [
    f"{task}/{backward}/10" for task in ("autoencoding", "numbering") for backward in ("approx", "unroll")
]
# Profiler entries that only wrap other entries (their self time is bookkeeping, not work).
_WRAPPERS = ("## Call CompiledFxGraph", "Torch-Compiled Region", "CompiledFunction", "autograd::engine")


@dataclass
class StepProfile:
    step_s: float  # wall seconds per step, the median of unprofiled steps
    profiled_s: float  # wall seconds per profiled step
    matmul_s: float  # the matrix products' self seconds per profiled step
    others: list[tuple[str, float]]  # the largest other items: (profiler entry, self seconds per step)

    @property
    def share(self) -> float:
        return self.matmul_s / self.profiled_s


def profile_step(config: str, impl: str, steps: int, device: torch.device) -> StepProfile:
    """Profile ``steps`` training steps of ``config`` after a warm-up."""
    setup = build(config, device, impl)
    for _ in range(3):  # compilation, lazy initialisation, optimiser state
        setup.step()
    walls = []
    for _ in range(steps):  # unprofiled: the profiler's own cost stays out of the step time
        start = time.perf_counter()
        setup.step()
        walls.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            setup.step()
        profiled = (time.perf_counter() - start) / steps
    self_s = {e.key: e.self_cpu_time_total / 1e6 / steps for e in prof.key_averages()}
    matmul = sum(self_s.get(name, 0.0) for name in MATRIX_PRODUCTS)
    others = sorted(
        ((name, s) for name, s in self_s.items() if name not in MATRIX_PRODUCTS and not name.startswith(_WRAPPERS)),
        key=lambda item: -item[1],
    )
    return StepProfile(statistics.median(walls), profiled, matmul, others[:3])


def _short(name: str, width: int = 56) -> str:
    """``name`` cut in the middle to ``width``: inductor's kernels differ by their ends (``..._0``)."""
    name = re.sub(r"^graph_\d+_", "", name)  # which graph it is depends on the process, not the kernel
    if len(name) <= width:
        return name
    head = (width - 3) * 2 // 3
    return name[:head] + "..." + name[head + 3 - width :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="task/backward/iters, as step_benchmark")
    parser.add_argument("--impl", default="compiled", choices=["eager", "compiled"])
    parser.add_argument("--steps", type=int, default=3, help="unprofiled, then profiled steps per configuration")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=None, help="write the markdown report here")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    device = torch.device("cpu")
    torch.set_num_threads(args.threads)
    inductor_config.cpp.enable_kernel_profile = True  # each compiled kernel its own profiler entry
    rows = []
    for config in args.configs:
        print(f"profiling {config} ({args.impl})", file=sys.stderr, flush=True)
        r = profile_step(config, args.impl, args.steps, device)
        others = "; ".join(f"{_short(name)} {1e3 * s:.1f}" for name, s in r.others)
        rows.append(
            f"| {config} | {1e3 * r.step_s:.0f} | {1e3 * r.profiled_s:.0f} | {1e3 * r.matmul_s:.0f} | "
            f"{100 * r.share:.0f}% | {1 / r.share:.2f} | {others} |"
        )
    lines = [
        f"# Matrix products in a training step, {datetime.date.today().isoformat()}",
        "",
        f"Machine: {machine_label(device)}; torch {torch.__version__}, numpy {numpy.__version__}, "
        f"{args.threads} threads, batch {BATCH}, {args.impl}, {args.steps} profiled steps per configuration. "
        f"Command: `{command_line('step_profile.py', argv)}`",
        "",
        "| config | step ms | profiled step ms | matrix products ms | share | bound (1 / share) | "
        "largest other items (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        atomic_write_text(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
