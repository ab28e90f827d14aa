"""The explicit catalogue of experiments, reproductions and ``idspn data`` commands.

Adding to the suite means adding one ``register_*`` line at the bottom of this file:

* ``register_experiment(spec)``: an :class:`~idspn_experiments.engine.spec.Experiment`; presets name it
  in their ``"experiment"`` field (``idspn train``).
* ``register_reproduction(reproduction)``: a :class:`~idspn_experiments.runs.plan.Reproduction`
  (``idspn reproduce <name>``).
* ``register_data_command(command)``: a :class:`DataCommand`, a subcommand of ``idspn data``
  (e.g. ``idspn data clevr-synth ...``). Its ``add_arguments`` fills an argparse sub-parser and
  ``run`` receives the parsed namespace; import heavy dependencies inside ``run``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from idspn_experiments.engine.spec import Experiment
from idspn_experiments.runs.plan import Reproduction

__all__ = [
    "EXPERIMENTS",
    "REPRODUCTIONS",
    "DATA_COMMANDS",
    "DataCommand",
    "register_experiment",
    "register_reproduction",
    "register_data_command",
    "get_experiment",
    "get_reproduction",
]

EXPERIMENTS: dict[str, Experiment[Any]] = {}
REPRODUCTIONS: dict[str, Reproduction] = {}


@dataclass(frozen=True)
class DataCommand:
    """A subcommand of ``idspn data``: prepares or generates a data set."""

    name: str  # `idspn data <name>`
    help: str  # one line for --help
    add_arguments: Callable[[argparse.ArgumentParser], None]  # declares the subcommand's options
    run: Callable[[argparse.Namespace], int]  # does the work; returns the exit code


DATA_COMMANDS: dict[str, DataCommand] = {}


def _add(table: dict[str, Any], name: str, item: Any, kind: str) -> None:
    if name in table:
        raise ValueError(f"{kind} {name!r} is registered twice")
    table[name] = item


def register_experiment(experiment: Experiment[Any]) -> None:
    """Make ``experiment`` available to presets, ``idspn train`` and ``idspn eval``."""
    _add(EXPERIMENTS, experiment.name, experiment, "experiment")


def register_reproduction(reproduction: Reproduction) -> None:
    """Make ``reproduction`` available to ``idspn reproduce``."""
    if reproduction.experiment.name not in EXPERIMENTS:
        raise ValueError(
            f"reproduction {reproduction.name!r} uses unregistered experiment {reproduction.experiment.name!r}"
        )
    _add(REPRODUCTIONS, reproduction.name, reproduction, "reproduction")


def register_data_command(command: DataCommand) -> None:
    """Add ``idspn data <command.name>``."""
    _add(DATA_COMMANDS, command.name, command, "data command")


def get_experiment(name: str) -> Experiment[Any]:
    """The registered experiment ``name``; ValueError listing the known ones otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r} (known: {', '.join(sorted(EXPERIMENTS))})")
    return EXPERIMENTS[name]


def get_reproduction(name: str) -> Reproduction:
    """The registered reproduction ``name``; ValueError listing the known ones otherwise."""
    if name not in REPRODUCTIONS:
        raise ValueError(f"unknown reproduction {name!r} (known: {', '.join(sorted(REPRODUCTIONS))})")
    return REPRODUCTIONS[name]


# --- the catalogue ----------------------------------------------------------------------------

from idspn_experiments.numbering.tables import TABLE2, TABLE4  # noqa: E402
from idspn_experiments.numbering.task import NUMBERING  # noqa: E402

register_experiment(NUMBERING)
register_reproduction(TABLE2)
register_reproduction(TABLE4)

from idspn_experiments.autoencoding.tables import AUTOENCODING_REPRODUCTION  # noqa: E402
from idspn_experiments.autoencoding.task import AUTOENCODING  # noqa: E402

register_experiment(AUTOENCODING)
register_reproduction(AUTOENCODING_REPRODUCTION)

from idspn_experiments.clevr.data import SYNTH_COMMAND_HELP, add_synth_arguments, run_synth  # noqa: E402
from idspn_experiments.clevr.tables import TABLE3, TABLE7  # noqa: E402
from idspn_experiments.clevr.task import CLEVR  # noqa: E402

register_experiment(CLEVR)
register_reproduction(TABLE3)
register_reproduction(TABLE7)
register_data_command(DataCommand("clevr-synth", SYNTH_COMMAND_HELP, add_synth_arguments, run_synth))
