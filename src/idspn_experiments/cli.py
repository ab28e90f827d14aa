"""The ``idspn`` command: train, evaluate, reproduce tables, prepare data.

Usage::

    idspn demo                                                      # a minute: iDSPN vs DeepSets
    idspn list
    idspn train numbering-small model.name=bilstm data.train_size=6400 --out runs/bilstm
    idspn train numbering-small --out runs/bilstm --resume          # continue an interrupted run
    idspn eval runs/bilstm/best.pt [--split test] [model.iters=40]
    idspn reproduce numbering --budget small --seeds 0 --out results/numbering-small   # run again to finish
    idspn reproduce autoencoding --budget small --out results/ae-small --workers 2     # 2 runs at once
    idspn data <command> ...                                        # see `idspn data --help`

Data parallel on several processes (CPU: gloo, GPU: NCCL), unchanged otherwise::

    torchrun --nproc_per_node 2 -m idspn_experiments train numbering-small --out runs/ddp
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from idspn_experiments.engine.allocator import keep_freed_memory

__all__ = ["main", "build_parser"]

_EXTRA = ("tqdm", "matplotlib", "PIL", "torchvision")  # what the experiments extra brings


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one run from a preset with key=value overrides")
    p.add_argument("preset", help="preset name (see `idspn list`) or path to a JSON preset")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, dotted keys for nested fields")
    p.add_argument("--out", type=str, default=None, help="run folder (default: runs/<preset>/seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint (best.pt or last.pt) on a split")
    p.add_argument("checkpoint", type=Path)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides for evaluation, e.g. model.iters=40 or device=cpu",
    )
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--no-progress", action="store_true")


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    from idspn_experiments.runs.plan import BUDGETS

    p = sub.add_parser("reproduce", help="reproduce a paper table; run it again to finish an interrupted one")
    p.add_argument("reproduction", help="what to reproduce (see `idspn list`)")
    p.add_argument("--budget", choices=BUDGETS, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the budget's seeds")
    p.add_argument("--out", type=str, required=True, help="output folder (results.json, results.md, runs/)")
    p.add_argument("--rows", nargs="+", default=None, help="only these table rows")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="runs at once: 1 (default) trains in this process; more use local worker processes "
        "(or caps the SLURM jobs running at once); unfinished runs always continue from their "
        "checkpoints",
    )
    p.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="where runs execute: this machine or a SLURM job array (needs submitit)",
    )
    p.add_argument(
        "--slurm",
        nargs="+",
        default=[],
        metavar="key=value",
        help="submitit parameters for --executor slurm, e.g. partition=gpu timeout_min=240 gpus_per_node=1",
    )


def _add_data(sub: argparse._SubParsersAction) -> None:
    from idspn_experiments.registry import DATA_COMMANDS

    p = sub.add_parser("data", help="prepare or generate data sets")
    data_sub = p.add_subparsers(dest="data_command", metavar="<command>")
    data_sub.required = True
    for command in DATA_COMMANDS.values():
        command.add_arguments(data_sub.add_parser(command.name, help=command.help))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``idspn`` (subcommands train, eval, reproduce, data, list)."""
    parser = argparse.ArgumentParser(prog="idspn", description="iDSPN experiments: train, evaluate, reproduce.")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    sub.add_parser("list", help="list experiments, presets, reproductions and data commands")
    demo = sub.add_parser("demo", help="train iDSPN and DeepSets on small numbering sets for about a minute")
    demo.add_argument("--out", type=str, default="runs/demo", help="run folders (default: runs/demo)")
    demo.add_argument("--no-progress", action="store_true")
    _add_train(sub)
    _add_eval(sub)
    _add_reproduce(sub)
    _add_data(sub)
    return parser


def _cmd_list(args: argparse.Namespace) -> int:
    from idspn_experiments.engine.config import preset_names
    from idspn_experiments.registry import DATA_COMMANDS, EXPERIMENTS, REPRODUCTIONS

    print("experiments:")
    for e in EXPERIMENTS.values():
        print(f"  {e.name:24s} {e.description}")
    print("presets:")
    for name in preset_names():
        print(f"  {name}")
    print("reproductions (idspn reproduce <name> --budget {smoke,small,paper}):")
    for r in REPRODUCTIONS.values():
        print(f"  {r.name:24s} {r.description}")
    print("data commands (idspn data <name>):")
    for c in DATA_COMMANDS.values():
        print(f"  {c.name:24s} {c.help}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from idspn_experiments.demo import run_demo
    from idspn_experiments.engine.io import writable_folder

    table = run_demo(writable_folder(args.out, "--out"), progress=not args.no_progress)
    print()
    print("Class-specific numbering of 8-element multisets over 4 classes (Section 4.1, small):")
    print(table)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from idspn_experiments.engine import train
    from idspn_experiments.engine.config import load_config, read_preset
    from idspn_experiments.engine.io import dumps_json, writable_folder
    from idspn_experiments.registry import get_experiment

    experiment = get_experiment(read_preset(args.preset)["experiment"])
    cfg = load_config(experiment.config_type, args.preset, args.overrides)
    default = Path("runs") / Path(args.preset).stem / f"seed{cfg.seed}"
    out = writable_folder(default if args.out is None else args.out, "--out")

    result = train.fit(experiment, cfg, out, resume=args.resume, progress=not args.no_progress, overwrite=False)
    assert result is not None
    summary = {
        "run_dir": str(out),
        "best_step": result.best_step,
        "val": result.val,
        "test": result.test,
        "wall_time_s": round(result.wall_time_s, 2),
        "step_time_s": round(result.step_time_s, 4),
    }
    if _is_main():
        print(dumps_json(summary, indent=2))
    return 0


def _state_dict_misfits(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """What keeps ``found`` from loading into a model whose state dict is ``expected``."""
    misfits = [f"{key} missing" for key in expected if key not in found]
    misfits += [f"{key} unexpected" for key in found if key not in expected]
    misfits += [
        f"{key} has shape {tuple(found[key].shape)}, the model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in found and hasattr(found[key], "shape") and tuple(found[key].shape) != tuple(value.shape)
    ]
    return misfits


def _cmd_eval(args: argparse.Namespace) -> int:
    from idspn_experiments.engine.checkpoint import load_checkpoint
    from idspn_experiments.engine.config import apply_overrides, config_from_dict
    from idspn_experiments.engine.distributed import init_distributed
    from idspn_experiments.engine.io import dumps_json
    from idspn_experiments.engine.train import evaluate
    from idspn_experiments.registry import EXPERIMENTS, get_experiment

    ckpt = load_checkpoint(args.checkpoint)
    name = ckpt.get("experiment")
    if name not in EXPERIMENTS or not isinstance(ckpt.get("config"), dict) or "model" not in ckpt:
        raise ValueError(
            f"{args.checkpoint} is not an idspn run checkpoint (experiment {name!r}; expected best.pt "
            f"or last.pt of `idspn train`, with one of {sorted(EXPERIMENTS)})"
        )
    experiment = get_experiment(name)
    cfg = apply_overrides(config_from_dict(experiment.config_type, ckpt["config"]), args.overrides)
    ctx = init_distributed(cfg.device)
    model = experiment.build_model(cfg)
    misfits = _state_dict_misfits(model.state_dict(), ckpt["model"])
    if misfits:
        changed = ", ".join(args.overrides) or "none"
        raise ValueError(
            f"the weights in {args.checkpoint} do not fit the model these settings build (overrides: "
            f"{changed}): {'; '.join(misfits[:3])}{'; ...' if len(misfits) > 3 else ''}"
        )
    model.load_state_dict(ckpt["model"])
    data = experiment.build_data(cfg, not args.no_progress)
    dataset = getattr(data, args.split)
    if dataset is None:
        raise ValueError(f"experiment {experiment.name!r} has no {args.split!r} split")
    model.to(ctx.device)
    metrics = evaluate(
        experiment, model, dataset, cfg, ctx, data.collate, desc=args.split, progress=not args.no_progress
    )
    if _is_main():
        print(
            dumps_json(
                {"checkpoint": str(args.checkpoint), "step": ckpt.get("step"), "split": args.split, "metrics": metrics},
                indent=2,
            )
        )
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from idspn_experiments.registry import get_reproduction
    from idspn_experiments.runs.executors import parse_slurm_options, run_reproduction
    from idspn_experiments.runs.results import render_markdown

    reproduction = get_reproduction(args.reproduction)
    if args.slurm and args.executor != "slurm":
        raise ValueError("--slurm options need --executor slurm")
    records = run_reproduction(
        reproduction,
        args.budget,
        args.out,
        seeds=args.seeds,
        workers=args.workers,
        executor=args.executor,
        slurm=parse_slurm_options(args.slurm),
        rows=args.rows,
        progress=not args.no_progress,
        log=lambda msg: print(msg, flush=True) if _is_main() else None,
    )
    if _is_main():
        seeds = args.seeds or reproduction.seeds[args.budget]
        print()
        print(render_markdown(reproduction.table, records, args.budget, reproduction.notes.get(args.budget, ""), seeds))
        print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'results.md'}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from idspn_experiments.registry import DATA_COMMANDS

    return DATA_COMMANDS[args.data_command].run(args)


def _is_main() -> bool:
    from idspn_experiments.engine.distributed import is_main_process

    return is_main_process()


_COMMANDS = {
    "list": _cmd_list,
    "demo": _cmd_demo,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "reproduce": _cmd_reproduce,
    "data": _cmd_data,
}


def _missing_extra(err: ModuleNotFoundError, command: str) -> int | None:
    """Exit code 2 with the install hint if ``err`` is a module of the experiments extra, else None."""
    if err.name not in _EXTRA:
        return None
    prefix = f"idspn {command}" if command else "idspn"
    print(
        f"{prefix}: error: the idspn command needs the experiments extra (missing module {err.name!r}): "
        "pip install 'idspn[experiments]'",
        file=sys.stderr,
    )
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``idspn`` console script; returns the exit code."""
    try:
        parser = build_parser()
    except ModuleNotFoundError as err:
        code = _missing_extra(err, "")
        if code is None:
            raise
        return code
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow the options (argparse stops collecting them at the first option)
    if extra:
        if hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        keep_freed_memory()  # every command that trains or evaluates runs inner loops on the CPU
        return _COMMANDS[args.command](args)
    except ModuleNotFoundError as err:
        code = _missing_extra(err, args.command)
        if code is None:
            raise
        return code
    except (ValueError, FileNotFoundError) as err:
        print(f"idspn {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if "torch.distributed" in sys.modules:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                # Free what still holds the group (a DDP wrapper's reducer, in a reference cycle)
                # first, so that the group is destroyed here and not while the interpreter shuts
                # down, where gloo's threads can abort the process.
                gc.collect()
                dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
