"""Time and memory of one training step of iDSPN's three backward modes, side by side.

One training step = decoder forward + Hungarian loss + backward + Adam step, on the two models the
issue names (batch 128):

* autoencoding: n = d = 8, input set encoder and inner encoder Linear(d->512)-ReLU-Linear(512->512)-
  FSPool, learned initial set with regulariser 0.1, Huber Hungarian loss (Appendix F.2);
* numbering: n = 64, 4 fixed class dims + 64 ID dims, hidden/latent 256, simplex projection after
  every step, MSE Hungarian loss restricted within classes (Appendix F.1).

``approx`` and ``cg`` use Nesterov momentum 0.9 (iDSPN), ``unroll`` momentum 0 (DSPN), as in the
paper; numbering clips iDSPN's inner gradient at norm 40. ``cg`` cannot be combined with a projection
and is skipped for numbering. Times are medians over repeated steps, all in this one process; the
backward modes of one task and ``iters`` are timed in turn, round after round, so that a change in
the machine's speed during the run (a shared virtual machine's neighbours) affects all of them alike.
Peak memory is the growth of the resident set during one step after a warm-up step, measured in a
fresh single-threaded subprocess per configuration with the kernel's peak-RSS counter reset before
the step (CUDA: ``torch.cuda.max_memory_allocated``).

Finally one inner step (no grad; a 10-iteration run from a fixed start, divided by 10) is compared
with plain matrix products of the same shapes (the FLOP rate is their time over the step's) and
broken down into its parts, again timed in turn. The parts run on their own, on the whole batch, so
"the rest" is a residual: it holds the passes not timed separately and what the parts lose to each
other inside the loop, and on CPU it nets out what the loop's split over the batch gains. Beside
the parts, not in the sum: FSPool's weights on the differentiable path (ranks, then a gather, as in
training graphs) and ``torch.sort`` of the same rows, for reference. The last line is the share of
CPU time the host gave to other guests during the run (``/proc/stat`` steal).

Usage: ``python benchmarks/step_benchmark.py [--quick] [--out FILE.md] [--json FILE.json] [--device cpu]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from idspn import IDSPN, FSEncoder, hungarian_loss
from idspn.sorting import set_dim_outermost

BATCH = 128
DIFFERENTIABLE = "FSPool weights with grad"  # timed beside an inner step's parts, not one of them
TORCH_SORT = "torch.sort of the same rows"  # likewise: the reference for sorting.py's NumPy sorts
# The original code measured on this machine (torch 2.13, CPU, 2 threads, batch 128): s / step.
ORIGINAL_S_PER_STEP = {
    ("autoencoding", "approx", 10): 0.19,
    ("autoencoding", "approx", 20): 0.35,
    ("autoencoding", "approx", 40): 0.66,
    ("autoencoding", "unroll", 10): 0.43,
    ("autoencoding", "unroll", 20): 0.80,
    ("autoencoding", "unroll", 40): 1.73,
    ("numbering", "approx", 20): 1.78,
    ("numbering", "unroll", 20): 3.16,
}


@dataclass
class Setup:
    """One model, one batch and a closure running one full training step."""

    step: Callable[[], None]
    decoder: IDSPN
    inner_shapes: list[tuple[int, int, int]]  # (rows, in, out) of each inner-step matmul


def autoencoding(backward: str, iters: int, device: torch.device) -> Setup:
    n, d, width = 8, 8, 512
    torch.manual_seed(0)
    set_encoder = FSEncoder(d, width, width, set_size=n).to(device)
    inner = FSEncoder(d, width, width, set_size=n)
    momentum = 0.0 if backward == "unroll" else 0.9
    decoder = IDSPN(inner, n, d, iters=iters, momentum=momentum, init="learned", reg=0.1, backward=backward).to(device)
    params = list(set_encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    x = torch.randn(BATCH, n, d, device=device)

    def step() -> None:
        loss = hungarian_loss(decoder(set_encoder(x)), x, "huber")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = BATCH * n
    return Setup(step, decoder, [(rows, d, width), (rows, width, width), (rows, width, width), (rows, width, d)])


def numbering(backward: str, iters: int, device: torch.device) -> Setup:
    n, classes, hidden = 64, 4, 256
    torch.manual_seed(0)
    inner = FSEncoder(classes + n, hidden, hidden, set_size=n)
    idspn = backward != "unroll"
    decoder = IDSPN(
        inner, n, n, iters=iters, momentum=0.9 if idspn else 0.0, grad_clip=40.0 if idspn else None,
        projection="simplex", fixed_dim=classes, backward=backward,
    ).to(device)
    input_encoder = FSEncoder(classes, hidden, hidden, set_size=n).to(device)
    opt = torch.optim.Adam(list(decoder.parameters()) + list(input_encoder.parameters()), lr=1e-3)
    labels = torch.randint(0, classes, (BATCH, n), device=device)
    x = F.one_hot(labels, classes).float()  # (B, N, C)
    order = torch.argsort(labels, dim=1, stable=True)
    sorted_labels = labels.gather(1, order)
    first = torch.searchsorted(sorted_labels, sorted_labels, side="left")
    ids = torch.empty_like(labels).scatter_(1, order, torch.arange(n, device=device).expand(BATCH, n) - first)
    target = F.one_hot(ids, n).float()  # (B, N, N) per-class incremental IDs

    def step() -> None:
        pred = decoder(input_encoder(x), fixed=x)
        loss = hungarian_loss(pred, target, "mse", pred_groups=labels, target_groups=labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = BATCH * n
    dims = classes + n
    return Setup(step, decoder, [(rows, dims, hidden), (rows, hidden, hidden), (rows, hidden, hidden), (rows, hidden, dims)])


TASKS = {"autoencoding": autoencoding, "numbering": numbering}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_in_turn(steps: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds of each callable, timed one after the other in ``repeats`` rounds (each round
    starting one further along, so that no callable always runs first)."""
    for step in steps.values():
        step()  # warm-up
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            step = steps[name]
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def steal_ticks() -> int | None:
    """CPU time the hypervisor gave to other guests so far (``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8])
    except (OSError, IndexError, ValueError):
        return None


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_memory_child(task: str, backward: str, iters: int, device_name: str, queue: mp.Queue) -> None:
    torch.set_num_threads(1)
    device = torch.device(device_name)
    setup = TASKS[task](backward, iters, device)
    setup.step()  # warm-up: lazy initialisation and optimiser state are not part of a step
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        setup.step()
        queue.put(torch.cuda.max_memory_allocated() - base)
        return
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size (VmHWM) to the current one
    before = _status_bytes("VmRSS")
    setup.step()
    queue.put(_status_bytes("VmHWM") - before)


def peak_memory(task: str, backward: str, iters: int, device: torch.device) -> float:
    """Peak memory growth of one training step in MiB, from a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_memory_child, args=(task, backward, iters, str(device), queue))
    # glibc would keep freed tensors in its heap, hiding the second step's peak from the RSS: serve
    # every allocation over 64 KiB by mmap, returned to the system when freed.
    previous = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        proc.start()
    finally:
        if previous is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = previous
    value = queue.get()
    proc.join()
    return value / 2**20


def inner_step_parts(setup: Setup, device: torch.device, repeats: int) -> dict[str, float]:
    """Milliseconds of one no-grad inner step, of its matrix products alone, of FSPool's weights and
    of the projection, timed in turn (the parts on inputs of the loop's shapes and memory layout)."""
    decoder = setup.decoder
    encoder = decoder.encoder
    n, d, latent = decoder.set_size, decoder.set_dim, encoder.latent_dim
    z = torch.randn(BATCH, latent, device=device)
    y0 = torch.randn(BATCH, n, d, device=device) * 0.3
    fixed = None
    if decoder.fixed_dim:
        fixed = F.one_hot(torch.randint(0, decoder.fixed_dim, (BATCH, n), device=device), decoder.fixed_dim).float()
    problem = decoder.problem(z, y0, fixed)
    iters = 10
    mats = [(torch.randn(r, i, device=device), torch.randn(i, o, device=device)) for r, i, o in setup.inner_shapes]
    # FSEncoder.value_and_vjp lays the element features out set-outermost or set-innermost in memory
    if set_dim_outermost(n):
        h = torch.randn(n, BATCH, latent, device=device).transpose(0, 1)  # (B, N, L)
    else:
        h = torch.randn(latent, BATCH, n, device=device).permute(1, 2, 0)  # (B, N, L)

    def matmuls() -> None:
        for a, b in mats:
            a @ b

    parts: dict[str, Callable[[], object]] = {
        "inner step": lambda: decoder.optimizer.run(problem, y0, iters),
        "matrix products": lambda: [matmuls() for _ in range(iters)],
        "FSPool weights": lambda: [encoder.pool.element_weights(h) for _ in range(iters)],
    }
    if decoder.optimizer.projection is not None:
        parts["projection"] = lambda: [decoder.optimizer.projection(y0) for _ in range(iters)]

    def differentiable_weights() -> None:  # not a part of the step: the path a training graph takes
        with torch.enable_grad():
            for _ in range(iters):
                encoder.pool.element_weights(h)

    parts[DIFFERENTIABLE] = differentiable_weights
    parts[TORCH_SORT] = lambda: [torch.sort(h, dim=1, descending=True, stable=True) for _ in range(iters)]
    with torch.no_grad():
        seconds = time_in_turn(parts, device, repeats)
    return {name: 1e3 * t / iters for name, t in seconds.items()}



def describe_parts(task: str, ms: dict[str, float]) -> str:
    inner, plain = ms["inner step"], ms["matrix products"]
    named = [name for name in ms if name not in ("inner step", DIFFERENTIABLE, TORCH_SORT)]
    rest = inner - sum(ms[name] for name in named)
    pieces = " + ".join(f"{name} {ms[name]:.1f}" for name in named)
    return (f"- {task}: one inner step {inner:.1f} ms = {pieces} + the rest {rest:.1f} ms; "
            f"FLOP rate {100 * plain / inner:.0f}% of plain matmul (matrix products' time / the step's). "
            f"Beside it: FSPool weights with grad (ranks, then a differentiable gather, as in training "
            f"graphs) {ms[DIFFERENTIABLE]:.1f} ms; {TORCH_SORT} (stable, with indices) {ms[TORCH_SORT]:.1f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iters", type=int, nargs="+", default=[10, 20, 40, 80])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="iters 10 and 20, 2 repeats, no memory")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--out", default=None, help="write the markdown table here")
    parser.add_argument("--json", default=None, help="write raw numbers here")
    args = parser.parse_args(argv)
    if args.quick:
        args.iters, args.repeats, args.no_memory = [10, 20], 2, True
    device = torch.device(args.device)
    steal_before, wall_before = steal_ticks(), time.monotonic()
    rows, raw = [], []
    for task in TASKS:
        for iters in args.iters:
            modes = [b for b in ("approx", "cg", "unroll") if not (task == "numbering" and b == "cg")]
            setups = {b: TASKS[task](b, iters, device) for b in modes}
            seconds = time_in_turn({b: setup.step for b, setup in setups.items()}, device, args.repeats)
            del setups
            for backward in modes:
                mem = None if args.no_memory else peak_memory(task, backward, iters, device)
                original = ORIGINAL_S_PER_STEP.get((task, backward, iters))
                raw.append(dict(task=task, backward=backward, iters=iters, s_per_step=seconds[backward],
                                peak_mib=mem, original=original))
                speedup = "" if original is None else f"{original / seconds[backward]:.2f}x"
                mem_text = "-" if mem is None else f"{mem:.0f}"
                rows.append(f"| {task} | {backward} | {iters} | {seconds[backward]:.3f} | {mem_text} | "
                            f"{original or '-'} | {speedup} |")
                print(rows[-1], flush=True)
    lines = [
        f"Command: `python benchmarks/step_benchmark.py --iters {' '.join(map(str, args.iters))} "
        f"--repeats {args.repeats}{' --no-memory' if args.no_memory else ''}` "
        f"(device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, batch {BATCH})",
        "",
        "| task | backward | iters | s / step | peak MiB | original s / step | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]
    ratios = []
    for task in TASKS:
        by = {(r["backward"], r["iters"]): r for r in raw if r["task"] == task and "backward" in r}
        if ("approx", 20) in by and ("unroll", 20) in by:
            ratios.append(f"- {task}: approx / unroll step time at iters=20: "
                          f"{by['approx', 20]['s_per_step'] / by['unroll', 20]['s_per_step']:.2f}")
        lo, hi = min(args.iters), max(args.iters)
        if not args.no_memory and ("approx", lo) in by and ("approx", hi) in by:
            ratios.append(f"- {task}: approx peak memory at iters={hi} / iters={lo}: "
                          f"{by['approx', hi]['peak_mib'] / max(by['approx', lo]['peak_mib'], 1e-9):.2f}; "
                          f"unroll: {by['unroll', hi]['peak_mib'] / max(by['unroll', lo]['peak_mib'], 1e-9):.2f}")
        parts = inner_step_parts(TASKS[task]("approx", 20, device), device, args.repeats)
        raw.append(dict(task=task, inner_step_ms=parts))
        ratios.append(describe_parts(task, parts))
    steal_after = steal_ticks()
    if steal_before is not None and steal_after is not None:
        cpu_seconds = (time.monotonic() - wall_before) * (os.cpu_count() or 1)
        share = (steal_after - steal_before) / os.sysconf("SC_CLK_TCK") / cpu_seconds
        ratios.append(f"- CPU time taken by the host for other guests during the run (steal): {100 * share:.1f}%")
    lines += ratios + [""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            f.write(text)
        os.replace(args.out + ".tmp", args.out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
