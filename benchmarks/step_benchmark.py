"""Time and memory of one iDSPN training step, side by side with other implementations.

One training step = decoder forward + Hungarian loss + backward + Adam step, on the two models of
the paper's CPU-sized experiments (batch 128):

* autoencoding: n = d = 8, input set encoder and inner encoder Linear(d->512)-ReLU-Linear(512->512)-
  FSPool, learned initial set with regulariser, Huber Hungarian loss (Appendix F.2);
* numbering: n = 64, 4 fixed class dims + 64 ID dims, hidden/latent 256, simplex projection after
  every step, MSE Hungarian loss restricted within classes (Appendix F.1).

``approx`` and ``cg`` use Nesterov momentum 0.9 (iDSPN), ``unroll`` momentum 0 (DSPN), as in the
paper; numbering clips iDSPN's inner gradient at norm 40; ``cg`` cannot be combined with a projection
and is skipped for numbering. A configuration is named ``task/backward/iters``. ``eval`` (not run by
default: ``--backwards eval``) times an evaluation step of the iDSPN model instead, encoder and
decoder forward without grad: the inner loop alone, with none of a training step's other work.

Implementations run in worker processes that speak one line protocol (JSON per line on stdin and
stdout: ``{"op": "setup", "config": ...}``, ``{"op": "time", "config": ..., "steps": k}`` answered
by ``{"ok": true, "seconds": [...]}``, ``{"op": "quit"}``), so that very different code can be timed
in one run: this library eager (``eager``) and with ``IDSPN(compile=True)`` (``compiled``), either
with ``FSEncoder``'s matrix products by ATen instead of oneDNN (``eager-aten``,
``compiled-aten``: ``idspn.onednn_linear.set_matmul_backend("aten")``), another
revision of it (``--baseline-src DIR``, e.g. a ``git worktree`` of an older commit), and any external
program (``--worker NAME=COMMAND``). Only one worker runs at a time. Every configuration is timed
round after round, the implementations in turn with the order rotated, so that a change of the
machine's speed during the run hits them alike; the table gives medians and ratios.

Then, in this process: the peak memory of a step (the growth of the resident set, or
``torch.cuda.max_memory_allocated``, in a fresh single-threaded process per configuration), and the
FLOP rate of one no-grad inner step, eager and compiled: the time of its four matrix products alone
(by the matrix-product backend the step uses) over the time of the step, timed in turn.

Usage::

    python benchmarks/step_benchmark.py [--quick] [--iters 10 20 40] [--impls eager compiled]
        [--baseline-src DIR] [--worker NAME=COMMAND ...] [--device cuda] [--out FILE.md] [--json FILE.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import torch
import torch.nn.functional as F

from idspn_experiments.engine.allocator import ENVIRONMENT, SETTING, keep_freed_memory

BATCH = 128
TASKS = ("autoencoding", "numbering")
BACKWARDS = ("approx", "cg", "unroll")  # run by default
MODES = (*BACKWARDS, "eval")  # eval: a no-grad forward of the iDSPN model


# --- the models -----------------------------------------------------------------------------------


@dataclass
class Setup:
    """One model, one batch and a closure running one full training step."""

    step: Callable[[], None]
    forward: Callable[[], Any]  # the model's forward on the batch, which ``step`` trains through
    decoder: Any  # idspn.IDSPN
    inner_shapes: list[tuple[int, int, int]]  # (rows, in, out) of each inner-step matmul


# This library's implementations: eager, one compiled inner step, CUDA graphs of it; "-aten": the
# same with FSEncoder's matrix products by ATen (``set_matmul_backend("aten")``), not oneDNN.
ATEN = "-aten"
IMPLS = ["eager", "compiled", "cuda-graphs", "eager" + ATEN, "compiled" + ATEN]


def _decoder_kwargs(impl: str, device: torch.device) -> dict[str, Any]:
    impl = impl.removesuffix(ATEN)
    if impl == "compiled":
        return {"compile": True}
    if impl == "cuda-graphs":
        return {"compile": "reduce-overhead", "check_finite": False}
    return {}


def _adam(params: list[torch.nn.Parameter]) -> torch.optim.Adam:
    """Adam at lr 1e-3, fused as the training engine's (``engine.train.adam``) on CPU and CUDA. Made
    here, not imported from the engine, so that every worker steps the same optimiser whichever
    revision of the library it imports (``--baseline-src``)."""
    return torch.optim.Adam(params, lr=1e-3, fused=True)


def autoencoding(backward: str, iters: int, device: torch.device, impl: str = "eager") -> Setup:
    from idspn import IDSPN, FSEncoder, hungarian_loss

    n, d, width = 8, 8, 512
    torch.manual_seed(0)
    set_encoder = FSEncoder(d, width, width, set_size=n).to(device)
    inner = FSEncoder(d, width, width, set_size=n)
    momentum = 0.0 if backward == "unroll" else 0.9
    decoder = IDSPN(
        inner,
        n,
        d,
        iters=iters,
        momentum=momentum,
        init="learned",
        reg=0.1 / (n * d),
        backward=backward,
        **_decoder_kwargs(impl, device),
    ).to(device)
    opt = _adam([*set_encoder.parameters(), *decoder.parameters()])
    x = torch.randn(BATCH, n, d, device=device)

    def forward() -> Any:
        return decoder(set_encoder(x))

    def step() -> None:
        loss = hungarian_loss(forward(), x, "huber")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = BATCH * n
    shapes = [(rows, d, width), (rows, width, width), (rows, width, width), (rows, width, d)]
    return Setup(step, forward, decoder, shapes)


def numbering(backward: str, iters: int, device: torch.device, impl: str = "eager") -> Setup:
    from idspn import IDSPN, FSEncoder, hungarian_loss

    n, classes, hidden = 64, 4, 256
    torch.manual_seed(0)
    inner = FSEncoder(classes + n, hidden, hidden, set_size=n)
    idspn = backward != "unroll"
    decoder = IDSPN(
        inner,
        n,
        n,
        iters=iters,
        momentum=0.9 if idspn else 0.0,
        grad_clip=40.0 if idspn else None,
        projection="simplex",
        fixed_dim=classes,
        backward=backward,
        init_std=0.1,
        **_decoder_kwargs(impl, device),
    ).to(device)
    input_encoder = FSEncoder(classes, hidden, hidden, set_size=n).to(device)
    opt = _adam([*decoder.parameters(), *input_encoder.parameters()])
    labels = torch.randint(0, classes, (BATCH, n), device=device)
    x = F.one_hot(labels, classes).float()  # (B, N, C)
    order = torch.argsort(labels, dim=1, stable=True)
    sorted_labels = labels.gather(1, order)
    first = torch.searchsorted(sorted_labels, sorted_labels, side="left")
    ids = torch.empty_like(labels).scatter_(1, order, torch.arange(n, device=device).expand(BATCH, n) - first)
    target = F.one_hot(ids, n).float()  # (B, N, N) per-class incremental IDs

    def forward() -> Any:
        return decoder(input_encoder(x), fixed=x)

    def step() -> None:
        pred = forward()
        loss = hungarian_loss(pred, target, "mse", pred_groups=labels, target_groups=labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = BATCH * n
    dims = classes + n
    shapes = [(rows, dims, hidden), (rows, hidden, hidden), (rows, hidden, hidden), (rows, hidden, dims)]
    return Setup(step, forward, decoder, shapes)


BUILDERS = {"autoencoding": autoencoding, "numbering": numbering}


def build(config: str, device: torch.device, impl: str) -> Setup:
    task, backward, iters = config.split("/")
    if task not in BUILDERS or backward not in MODES:
        raise ValueError(
            f"config must be task/backward/iters with task in {TASKS} and backward in {MODES}, got {config!r}"
        )
    if backward != "eval":
        return BUILDERS[task](backward, int(iters), device, impl)
    setup = BUILDERS[task]("approx", int(iters), device, impl)  # the iDSPN model, evaluated

    def evaluate() -> None:
        with torch.no_grad():
            setup.forward()

    setup.step = evaluate
    return setup


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# --- workers ----------------------------------------------------------------------------------------


def serve(impl: str, device: torch.device) -> None:
    """Answer the line protocol on stdin/stdout for this library as ``impl`` (a worker process)."""
    if impl.endswith(ATEN):
        from idspn.onednn_linear import set_matmul_backend

        set_matmul_backend("aten")
    steps: dict[str, Callable[[], None]] = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "quit":
                break
            config = request["config"]
            if request["op"] == "setup":
                setup = build(config, device, impl)
                setup.step()  # warm-up: compilation, lazy initialisation, optimiser state
                setup.step()
                steps[config] = setup.step
                reply: dict[str, Any] = {"ok": True}
            else:
                seconds = []
                for _ in range(int(request["steps"])):
                    _sync(device)
                    start = time.perf_counter()
                    steps[config]()
                    _sync(device)
                    seconds.append(time.perf_counter() - start)
                reply = {"ok": True, "seconds": seconds}
        except Exception as err:  # reported to the coordinator, which leaves the cell empty
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), flush=True)


class Worker:
    """A worker process speaking the line protocol."""

    def __init__(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1
        )
        self.broken: dict[str, str] = {}

    def request(self, **request: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):  # it died before reading (e.g. at an import): its cells stay empty
            return {"ok": False, "error": f"worker {self.name} exited with code {self.process.wait()}"}
        line = self.process.stdout.readline()
        if not line:
            return {"ok": False, "error": f"worker {self.name} exited with code {self.process.wait()}"}
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.request(op="quit")
            except (BrokenPipeError, OSError):
                pass
            self.process.wait(timeout=60)


def malloc_environment(malloc: str) -> dict[str, str]:
    """This process's environment for a process that keeps freed memory or uses glibc's own thresholds."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    if malloc == "keep":
        env.update(ENVIRONMENT)
    env[SETTING] = malloc
    return env


def own_worker(impl: str, device: torch.device, threads: int, malloc: str, src: str | None = None) -> Worker:
    """This script as a worker for ``impl``, importing ``idspn`` from ``src`` (default: as installed)."""
    env = malloc_environment(malloc)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [sys.executable, __file__, "--serve", impl, "--device", str(device), "--threads", str(threads)]
    return Worker(impl if src is None else f"{impl} @ {src}", command, env)


def time_in_turn(
    workers: list[Worker], configs: list[str], rounds: int, steps: int, log: Callable[[str], None]
) -> dict[tuple[str, str], float | None]:
    """Median seconds per step of every (worker, config); None where a worker failed."""
    out: dict[tuple[str, str], float | None] = {}
    for config in configs:
        ready = []
        for worker in workers:
            reply = worker.request(op="setup", config=config)
            if reply["ok"]:
                ready.append(worker)
            else:
                worker.broken[config] = reply["error"]
                out[worker.name, config] = None
                log(f"  {worker.name} {config}: {reply['error']}")
        times: dict[str, list[float]] = {w.name: [] for w in ready}
        for round_ in range(rounds):
            for worker in ready[round_ % max(len(ready), 1) :] + ready[: round_ % max(len(ready), 1)]:
                time.sleep(0.05)  # the previous worker's idle threads stop spinning
                reply = worker.request(op="time", config=config, steps=steps)
                if reply["ok"]:
                    times[worker.name] += reply["seconds"]
                else:
                    worker.broken[config] = reply["error"]
        for worker in ready:
            out[worker.name, config] = statistics.median(times[worker.name]) if times[worker.name] else None
        log(f"  {config}: " + ", ".join(f"{w.name} {out[w.name, config] or float('nan'):.4f} s" for w in workers))
    return out


# --- memory and FLOP rate (in this process and fresh ones) ------------------------------------------


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_memory_child(config: str, device_name: str, queue: mp.Queue) -> None:
    torch.set_num_threads(1)
    device = torch.device(device_name)
    setup = build(config, device, "eager")
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


def peak_memory(config: str, device: torch.device) -> float:
    """Peak memory growth of one eager training step in MiB, from a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_memory_child, args=(config, str(device), queue))
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


@dataclass
class InnerState:
    """One no-grad inner step's inputs at a task's shapes: the problem, an iterate and its momentum."""

    setup: Setup
    problem: Any  # idspn.decoders.InnerProblem
    y: torch.Tensor  # (B, N, D)
    buf: torch.Tensor  # (B, N, D)

    def matrix_products(self) -> Callable[[], object]:
        """The step's four matrix products alone, on random operands of their shapes."""
        from idspn.onednn_linear import linear

        device = self.y.device
        mats = [
            (torch.randn(r, i, device=device), torch.randn(i, o, device=device)) for r, i, o in self.setup.inner_shapes
        ]
        return lambda: [linear(a, b.t()) for a, b in mats]  # by the matmul backend the step uses


def inner_state(task: str, device: torch.device) -> InnerState:
    """The inner problem of ``task``'s decoder on a random encoding, at a random feasible iterate."""
    setup = build(f"{task}/approx/20", device, "eager")
    decoder = setup.decoder
    n, d, latent = decoder.set_size, decoder.set_dim, decoder.encoder.latent_dim
    z = torch.randn(BATCH, latent, device=device)
    y0 = decoder.optimizer.project(torch.randn(BATCH, n, d, device=device) * 0.3)
    fixed = None
    if decoder.fixed_dim:
        fixed = F.one_hot(torch.randint(0, decoder.fixed_dim, (BATCH, n), device=device), decoder.fixed_dim).float()
    return InnerState(setup, decoder.problem(z, y0, fixed), y0, torch.zeros_like(y0))


def time_parts(parts: dict[str, Callable[[], object]], device: torch.device, rounds: int) -> dict[str, float]:
    """Median milliseconds of each no-grad callable, after two warm-up calls, timed in turn (order rotated)."""
    times: dict[str, list[float]] = {name: [] for name in parts}
    with torch.no_grad():
        for fn in parts.values():
            fn(), fn()  # warm-up and compilation
        names = list(parts)
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                _sync(device)
                start = time.perf_counter()
                parts[name]()
                _sync(device)
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def inner_step_rates(task: str, device: torch.device, rounds: int) -> dict[str, float]:
    """Milliseconds of one no-grad inner step (eager, compiled) and of its matrix products alone."""
    from idspn.decoders import compile_arguments, inner_step

    state = inner_state(task, device)
    optimizer = state.setup.decoder.optimizer
    compiled = torch.compile(inner_step, fullgraph=True, **compile_arguments("default", device))  # as compile=True
    parts: dict[str, Callable[[], object]] = {
        "eager inner step": lambda: inner_step(state.problem, optimizer, state.y, state.buf),
        "compiled inner step": lambda: compiled(state.problem, optimizer, state.y, state.buf),
        "matrix products": state.matrix_products(),
    }
    return time_parts(parts, device, rounds * 5)


# --- the report -------------------------------------------------------------------------------------


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that wrote a report, quoted so that it can be pasted back into a shell."""
    return shlex.join(["python", f"benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])])


def machine_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads of every worker")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--iters", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--backwards", nargs="+", default=list(BACKWARDS), choices=MODES)
    parser.add_argument(
        "--impls",
        nargs="+",
        default=["eager", "compiled"],
        choices=IMPLS,
        help="this library's implementations to time",
    )
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="source folder of another idspn revision (containing idspn/), timed eager beside ours",
    )
    parser.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="an external program speaking the line protocol, e.g. the original code's adapter",
    )
    parser.add_argument(
        "--malloc",
        nargs="+",
        default=["keep"],
        choices=["keep", "system"],
        help="keep: workers keep freed memory as `idspn train` does (engine.allocator); system: glibc's own "
        "thresholds. The first setting holds for every worker and this process; a second one adds a "
        "worker per implementation of ours, named IMPL/SETTING",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of timing per configuration")
    parser.add_argument("--steps", type=int, default=2, help="steps per worker and round")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--quick", action="store_true", help="iters 10 and 20, 2 rounds, no memory")
    parser.add_argument("--out", default=None, help="write the markdown report here")
    parser.add_argument("--json", default=None, help="write the raw numbers here")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if args.serve:
        serve(args.serve, device)
        return 0
    if args.quick:
        args.iters, args.rounds, args.no_memory = [10, 20], 2, True
    for name in ENVIRONMENT:  # the first setting holds for external workers and this process too
        os.environ.pop(name, None)
    os.environ.update(malloc_environment(args.malloc[0]))
    keep_freed_memory()
    configs = [
        f"{task}/{b}/{i}"
        for task in args.tasks
        for i in args.iters
        for b in args.backwards
        if not (task == "numbering" and b == "cg")
    ]
    workers = [own_worker(impl, device, args.threads, args.malloc[0]) for impl in args.impls]
    for malloc in dict.fromkeys(m for m in args.malloc[1:] if m != args.malloc[0]):
        for impl in args.impls:
            workers.append(own_worker(impl, device, args.threads, malloc))
            workers[-1].name = f"{impl}/{malloc}"
    if args.baseline_src:
        workers.append(own_worker("eager", device, args.threads, args.malloc[0], args.baseline_src))
        workers[-1].name = "baseline"
    for spec in args.worker:
        name, _, command = spec.partition("=")
        workers.append(Worker(name, shlex.split(command)))
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    started = datetime.datetime.now()
    log(f"timing {len(configs)} configurations x {len(workers)} implementations in turn")
    try:
        seconds = time_in_turn(workers, configs, args.rounds, args.steps, log)
    finally:
        for worker in workers:
            worker.close()
    names = [w.name for w in workers]
    memory = {} if args.no_memory else {c: peak_memory(c, device) for c in configs if "/cg/" not in c}
    rates = {task: inner_step_rates(task, device, args.rounds) for task in args.tasks}

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    reference = "compiled" if "compiled" in names else names[0]
    others = [n for n in names if n != reference]
    header = ["config", *(f"{n} s/step" for n in names), *(f"{n} / {reference}" for n in others)]
    if memory:
        header.append("peak MiB (eager)")
    lines = [
        f"# Training step benchmark, {started:%Y-%m-%d}",
        "",
        f"Machine: {machine_label(device)}; torch {torch.__version__}, numpy {numpy.__version__}, "
        f"{args.threads} threads per worker, batch {BATCH}, malloc {args.malloc[0]}. "
        f"Command: `{command_line('step_benchmark.py', argv)}`",
        "",
        "Seconds per training step (median over rounds, implementations timed in turn); a ratio above 1 is how "
        f"many times slower that implementation is than `{reference}`.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] * len(header)) + " |",
    ]
    for config in configs:
        row = [config, *(cell(seconds.get((n, config))) for n in names)]
        ours = seconds.get((reference, config))
        for n in others:
            other = seconds.get((n, config))
            row.append("-" if ours is None or other is None else f"{other / ours:.2f}")
        if memory:
            row.append("-" if config not in memory else f"{memory[config]:.0f}")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "One no-grad inner step (ms) and the share of its time that its four matrix products alone take "
        "(the FLOP rate relative to plain matmul):",
        "",
        "| task | eager inner step | compiled inner step | matrix products | eager rate | compiled rate |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for task, ms in rates.items():
        mm = ms["matrix products"]
        lines.append(
            f"| {task} | {ms['eager inner step']:.1f} | {ms['compiled inner step']:.1f} | {mm:.1f} | "
            f"{100 * mm / ms['eager inner step']:.0f}% | {100 * mm / ms['compiled inner step']:.0f}% |"
        )
    lines.append("")
    for task in args.tasks:
        for impl in names[: len(args.impls)]:
            a, u = seconds.get((impl, f"{task}/approx/20")), seconds.get((impl, f"{task}/unroll/20"))
            if a and u:
                lines.append(f"- {task}, {impl}: approx / unroll step time at 20 iterations: {a / u:.2f}")
        lo, hi = min(args.iters), max(args.iters)
        for backward in ("approx", "unroll"):
            first, last = memory.get(f"{task}/{backward}/{lo}"), memory.get(f"{task}/{backward}/{hi}")
            if first and last and hi > lo:
                lines.append(f"- {task}, {backward}: peak memory at {hi} / {lo} iterations: {last / first:.2f}")
    broken = {f"{w.name} {c}": e for w in workers for c, e in w.broken.items()}
    lines += [f"- not timed: {k}: {e}" for k, e in broken.items()] + [""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "seconds": {f"{n} {c}": s for (n, c), s in seconds.items()},
                    "memory_mib": memory,
                    "inner_step_ms": rates,
                    "machine": machine_label(device),
                    "torch": torch.__version__,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
