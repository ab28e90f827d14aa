"""Where the time of one no-grad inner step goes, part by part, eager and compiled.

At the shapes of ``step_benchmark.py`` (batch 128; autoencoding n = d = 8 with hidden 512;
numbering n = 64 with 68 -> 256 -> 256 and the simplex projection), each part of the inner step is
timed alone, eagerly and compiled with ``torch.compile(fullgraph=True)``, all in turn in one process:

* ``inner step``: the whole step (``idspn.decoders.inner_step``), as ``IDSPN`` runs it (compiled
  with ``IDSPN(compile=True)``'s arguments, ``idspn.decoders.compile_arguments``);
* ``matrix products``: its four matrix products alone (what the FLOP rate is measured against), by
  the matrix-product backend the step uses (``idspn.onednn_linear``; on CPU oneDNN by default), and
  ``matrix products by ATen``: the same by ATen's kernels (``set_matmul_backend("aten")``), the
  row that shows why the oneDNN backend exists;
* ``duplicate index``: the exact duplicates among the encoder's input rows (``ranking.duplicate_index``);
* ``ranks``: the stable descending ranks of the element features (``ranking.descending_ranks``);
  for sets long enough to be sorted, also eagerly with ``torch.sort`` in place of the default
  NumPy backend (``ranks by torch.sort``: the row that shows why ``idspn.numpy_sort`` exists);
* ``larger-element count`` (compiled only): how many elements of its set exceed each element, the
  ranks without their tie rule. One comparison per pair of elements is the least work a pairwise
  count can do, so this row bounds how fast ranks by counting can get under ``torch.compile``;
* ``exact duplicates`` (CPU): the encoder's in-place copy of duplicate rows
  (``ranking.copy_first_occurrences_``), on features where nothing repeats, as in a random set;
* ``pool weights``: FSPool's weight of every element, ranks and lookup (``FSPool.element_weights``);
  on CPU of features already made exact, elsewhere with the canonical keys of the duplicate index;
* ``projection``: the simplex projection of the iterate (numbering only).

The parts overlap (pool weights include the ranks, and off the CPU the canonical keys) and,
compiled inside the step, are fused with each other, so they do not add up to the step; what they
show is the cost of each kind of work at these shapes, and so what bounds the step's FLOP rate:
with a step at rate ``r``, everything but the matrix products must fit in
``matrix products * (1 / r - 1)``.

Usage::

    python benchmarks/inner_step_parts.py [--tasks autoencoding numbering] [--rounds 30] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy
import torch

from idspn_experiments.engine.allocator import SETTING, keep_freed_memory
from idspn_experiments.engine.io import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_benchmark import BATCH, TASKS, command_line, inner_state, machine_label, time_parts  # noqa: E402

RATE_TARGETS = {"autoencoding": 0.85, "numbering": 0.70}  # the FLOP rates the compiled step aims at


def larger_element_count(h: torch.Tensor) -> torch.Tensor:
    """``(B, N, L) -> (B, N, L)``: how many elements of each set are larger, feature by feature (the
    ranks' count without the tie rule; eagerly it would hold all ``(B, N, N, L)`` comparisons)."""
    return (h.unsqueeze(1) > h.unsqueeze(2)).to(h.dtype).sum(2)


def parts_of(task: str, device: torch.device) -> dict[str, Callable[[], object]]:
    """The callables to time for ``task``: each part eagerly and compiled, and the matrix products."""
    from idspn.decoders import compile_arguments, inner_step
    from idspn.onednn_linear import use_matmul_backend
    from idspn.projections import project_simplex
    from idspn.ranking import (
        COUNTING_MAX_EAGER,
        copy_first_occurrences_,
        descending_ranks,
        duplicate_index,
        use_sort_backend,
    )
    from idspn.set_encoders import _exact_duplicates

    state = inner_state(task, device)
    problem, optimizer = state.problem, state.setup.decoder.optimizer
    encoder = problem.encoder
    x = problem._encoder_input(state.y)  # (B, N, F + D)
    with torch.no_grad():
        h = encoder.lin2(encoder.lin1(x).relu())  # (B, N, L): FSEncoder's element MLP
    table = encoder.fingerprint_table
    duplicates = duplicate_index(x, table)
    # None where FSEncoder copies the duplicates' features in place
    pooled_with = _exact_duplicates(h, x, None, encoder.pool, own=True, table=table)

    kinds: dict[str, Callable[[], object]] = {
        "inner step": lambda: inner_step(problem, optimizer, state.y, state.buf),
        "duplicate index": lambda: duplicate_index(x, table),
        "ranks": lambda: descending_ranks(h),
    }
    if pooled_with is None:
        kinds["exact duplicates"] = lambda: copy_first_occurrences_(h, duplicates)
    kinds["pool weights"] = lambda: encoder.pool.element_weights(h, None, pooled_with)
    if optimizer.projection is not None:
        kinds["projection"] = lambda: project_simplex(state.y)
    products = state.matrix_products()  # the same operands for both backends
    parts: dict[str, Callable[[], object]] = {"matrix products": products}
    for name, fn in kinds.items():
        parts[f"{name}, eager"] = fn
        options = compile_arguments("default", device) if name == "inner step" else {}  # as IDSPN(compile=True)
        parts[f"{name}, compiled"] = torch.compile(fn, fullgraph=True, **options)
    count = torch.compile(larger_element_count, fullgraph=True)
    parts["larger-element count, compiled"] = lambda: count(h)
    if h.shape[1] > COUNTING_MAX_EAGER["numpy"]:

        def ranks_by_torch_sort() -> object:
            with use_sort_backend("torch"):
                return descending_ranks(h)

        parts["ranks by torch.sort, eager"] = ranks_by_torch_sort

    def products_by_aten() -> object:
        with use_matmul_backend("aten"):
            return products()

    parts["matrix products by ATen, eager"] = products_by_aten
    return parts


def report(task: str, ms: dict[str, float]) -> list[str]:
    matmul = ms["matrix products"]
    step = ms["inner step, compiled"]
    target = RATE_TARGETS[task]
    lines = [
        f"### {task}",
        "",
        "| part | eager ms | compiled ms | compiled / matrix products |",
        "| --- | --- | --- | --- |",
        f"| matrix products | {matmul:.2f} | - | 1.00 |",
    ]
    names = [k.rsplit(", ", 1)[0] for k in ms if k != "matrix products"]
    for name in dict.fromkeys(names):  # in order, once each
        eager, compiled = ms.get(f"{name}, eager"), ms.get(f"{name}, compiled")
        eager_ms = "-" if eager is None else f"{eager:.2f}"  # None: a compiled-only row
        if compiled is None:  # an eager-only way of doing a part
            lines.append(f"| {name} | {eager_ms} | - | - |")
        else:
            lines.append(f"| {name} | {eager_ms} | {compiled:.2f} | {compiled / matmul:.2f} |")
    lines += [
        "",
        f"- compiled step's FLOP rate: {100 * matmul / step:.0f}% (target {100 * target:.0f}%)",
        f"- time for everything but the matrix products at the target rate: {matmul * (1 / target - 1):.2f} ms; "
        f"in the compiled step now: {step - matmul:.2f} ms",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--rounds", type=int, default=30, help="timed calls of every part (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--malloc",
        default="keep",
        choices=["keep", "system"],
        help="keep freed memory as `idspn train` does (engine.allocator), or glibc's own thresholds",
    )
    parser.add_argument("--out", type=Path, help="also write the report to this markdown file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    os.environ[SETTING] = args.malloc
    keep_freed_memory()
    lines = [
        f"# Inner step by parts, {datetime.date.today().isoformat()}",
        "",
        f"Machine: {machine_label(device)}; torch {torch.__version__}, numpy {numpy.__version__} (its sort: the "
        f"CPU sort backend), {args.threads} threads, batch {BATCH}, malloc {args.malloc}, "
        f"median of {args.rounds} calls. Command: `{command_line('inner_step_parts.py', argv)}`",
        "",
    ]
    for task in args.tasks:
        torch.manual_seed(0)
        ms = time_parts(parts_of(task, device), device, args.rounds)
        lines += report(task, ms)
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
