"""Inner learning rate and momentum vs how well the inner problem is solved and the outer loss.

Trains the random-set autoencoder (the task of Tables 5-6, here at n = d = 4 with 256 hidden units
for ``--steps`` steps) once per inner ``lr`` and ``momentum``, then, on the held-out sets, reports:

* outer loss: the Hungarian Huber loss of the reconstruction (what training lowers);
* L(Y0) -> L(Y*): the inner objective at the learned initial set and at the returned set
  (``IDSPN.record_diagnostics``), mean over held-out sets;
* ||grad L(Y*)||: the inner gradient's norm at the returned set, near 0 when the inner problem is
  solved (the premise of Eq. 9).

docs/guide.md quotes its table::

    python scripts/inner_lr_sweep.py --out results/inner-lr --steps 300

Runs go to ``OUT/lr<lr>-m<momentum>/`` and are skipped when finished; the table is printed and
written to ``OUT/table.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from idspn import IDSPN
from idspn_experiments.engine.checkpoint import load_checkpoint
from idspn_experiments.engine.config import load_config
from idspn_experiments.engine.io import atomic_write_text
from idspn_experiments.engine.train import evaluate, fit, load_run_result
from idspn_experiments.registry import get_experiment

TASK = ["data.set_size=4", "data.set_dim=4", "data.train_size=16000", "data.test_size=1024"]
MODEL = ["model.hidden_dim=256", "model.latent_dim=256", "model.iters=20", "model.compile=false"]


def run(out: Path, lr: float, momentum: float, steps: int) -> dict[str, float]:
    """Train one setting (or reuse its finished run) and measure its inner loop on the test sets."""
    experiment = get_experiment("autoencoding")
    overrides = [
        *TASK,
        *MODEL,
        f"model.lr={lr}",
        f"model.momentum={momentum}",
        f"train.steps={steps}",
        f"train.eval_every={steps}",
        f"train.checkpoint_every={steps}",
        "train.batch_size=128",
        "train.eval_batch_size=1024",
        "device=cpu",
    ]
    cfg = load_config(experiment.config_type, "autoencoding-small", overrides)
    folder = out / f"lr{lr:g}-m{momentum:g}"
    if load_run_result(folder) is None:
        fit(experiment, cfg, folder, resume="auto", progress=True)
    model = experiment.build_model(cfg)
    model.load_state_dict(load_checkpoint(folder / "best.pt")["model"])
    decoder = next(m for m in model.modules() if isinstance(m, IDSPN))
    decoder.record_diagnostics = True
    test = evaluate(experiment, model, experiment.build_data(cfg, False).test, cfg)  # one batch of 1024
    assert decoder.last_diagnostics is not None
    inner = decoder.last_diagnostics.summary()
    return {"outer": test["loss"], **inner}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and table.md")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0, 10.0])
    parser.add_argument("--momenta", type=float, nargs="+", default=[0.0, 0.9])
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    lines = [
        f"Random-set autoencoding, n = d = 4, 20 inner steps, {args.steps} training steps, seed 0; "
        "held-out means over 1,024 sets.",
        "",
        "| inner lr | momentum | outer loss (x1e-3) | L(Y0) | L(Y*) | L(Y*) / L(Y0) | ‖∇L(Y*)‖ |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for momentum in args.momenta:
        for lr in args.lrs:
            r = run(args.out, lr, momentum, args.steps)
            lines.append(
                f"| {lr:g} | {momentum:g} | {1e3 * r['outer']:.2f} | {r['initial_objective']:.2e} | "
                f"{r['final_objective']:.2e} | {r['final_objective'] / r['initial_objective']:.3f} | "
                f"{r['final_grad_norm']:.2e} |"
            )
    table = "\n".join(lines) + "\n"
    atomic_write_text(args.out / "table.md", table)
    print(table)


if __name__ == "__main__":
    main()
