"""Experiment configuration: dataclasses, JSON presets and checked ``key=value`` overrides.

Every experiment has one top-level config dataclass deriving from :class:`ExperimentConfig`
(shared fields: experiment name, seed, device, training schedule) and adds its own nested
dataclasses (typically ``data`` and ``model``). Presets are small JSON files in
``idspn_experiments/presets/`` holding a partial config dict; anything not given keeps the
dataclass default. Overrides use dotted keys for nested fields::

    cfg = load_config("numbering-small", ["model.name=bilstm", "train.steps=200"])

Values are checked against the field's annotation: unknown keys, wrong types and values out of
range raise ``ValueError`` naming the dotted key, the value and what is allowed. Ranges are part of
the annotation (``Annotated[int, AtLeast(1)]``); a config type may add checks that relate several
fields in a ``checks()`` method yielding ``(field, problem)`` pairs. ``check_config`` runs all of
them on a whole config (the engine does before training).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

__all__ = [
    "AtLeast",
    "Above",
    "Below",
    "Bound",
    "TrainConfig",
    "ExperimentConfig",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "preset_names",
    "read_preset",
    "config_diff",
    "load_config",
    "check_config",
]

C = TypeVar("C")


@dataclass(frozen=True)
class Bound:
    """A range constraint in a field's annotation: ``Annotated[float, Bound(low=0, low_open=True)]``.

    Numbers must also be finite (no NaN, no inf).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is excluded
    high_open: bool = False  # high itself is excluded

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "finite"


def AtLeast(low: float) -> Bound:  # noqa: N802 (reads as a type annotation)
    """``value >= low``."""
    return Bound(low=low)


def Above(low: float) -> Bound:  # noqa: N802
    """``value > low``."""
    return Bound(low=low, low_open=True)


def Below(high: float, low: float = 0.0) -> Bound:  # noqa: N802
    """``low <= value < high``."""
    return Bound(low=low, high=high, high_open=True)


PositiveInt = Annotated[int, AtLeast(1)]
PositiveFloat = Annotated[float, Above(0)]


@dataclass
class TrainConfig:
    """The optimisation schedule shared by every experiment (step-based, not epoch-based)."""

    steps: PositiveInt = 1000  # optimiser steps in total
    batch_size: PositiveInt = 128  # global batch size; split evenly over torchrun processes
    lr: PositiveFloat = 1e-3  # Adam learning rate
    warmup_steps: Annotated[int, AtLeast(0)] = 0  # linear learning-rate warm-up from 0 over this many steps
    lr_milestones: list[PositiveInt] = field(default_factory=list)  # steps at which lr is multiplied by lr_gamma
    lr_gamma: PositiveFloat = 0.1  # factor applied at each milestone
    grad_clip: PositiveFloat | None = None  # max global norm of the outer (parameter) gradient; None: no clipping
    eval_every: PositiveInt = 500  # validate every this many steps (and after the last step)
    eval_batch_size: PositiveInt = 512  # batch size for validation and test
    checkpoint_every: PositiveInt = 500  # write the resumable checkpoint every this many steps (and at the end)
    select_metric: str | None = "accuracy"  # validation metric that picks the reported model; None: last model
    select_mode: Literal["max", "min"] = "max"  # whether a larger or smaller select_metric is better
    num_workers: Annotated[int, AtLeast(0)] = 0  # DataLoader worker processes per rank
    tensorboard: bool = False  # also write scalars (and pictures) to <run>/tensorboard (the tensorboard extra)

    def checks(self) -> Iterator[tuple[str, str]]:
        if self.select_metric is not None and not self.select_metric.strip():
            yield "select_metric", f"must name a validation metric, or be none; got {self.select_metric!r}"


@dataclass
class ExperimentConfig:
    """Fields every experiment config has; experiments subclass this and add ``data``/``model``."""

    experiment: str = ""  # name of the registered experiment this config belongs to
    seed: Annotated[int, AtLeast(0)] = 0  # seeds data generation, model initialisation and the training stream
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto": CUDA when available, else CPU
    train: TrainConfig = field(default_factory=TrainConfig)  # optimisation schedule


# ---------------------------------------------------------------------------------------------
# Type checking of single values
# ---------------------------------------------------------------------------------------------


def _bounds(tp: Any) -> tuple[Any, list[Bound]]:
    """``(base type, its Bound constraints)`` of a possibly ``Annotated`` annotation."""
    if typing.get_origin(tp) is Annotated:
        base, *extras = typing.get_args(tp)
        return base, [e for e in extras if isinstance(e, Bound)]
    return tp, []


def _type_name(tp: Any) -> str:
    """A readable name for an annotation, used in error messages."""
    base, bounds = _bounds(tp)
    if bounds:
        return f"{_type_name(base)} {' and '.join(b.describe() for b in bounds)}"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"list of {_type_name(item)}"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _check_value(key: str, tp: Any, value: Any) -> Any:
    """Return ``value`` converted to annotation ``tp`` (JSON-decoded input), else raise ValueError."""
    base, bounds = _bounds(tp)
    if bounds:
        checked = _check_value(key, base, value)
        if not all(b.holds(checked) for b in bounds):
            raise ValueError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
        return checked
    origin = typing.get_origin(tp)
    error = ValueError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _check_value(key, option, value)
            except ValueError:
                continue
        raise error
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise error
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise error
        return [_check_value(f"{key}[{i}]", item, v) for i, v in enumerate(value)]
    if tp is type(None):
        if value is None:
            return None
        raise error
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise error
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise error
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise error
    if tp is str:
        if isinstance(value, str):
            return value
        raise error
    raise TypeError(f"config key '{key}': unsupported annotation {tp!r}")


def _parse_string(key: str, tp: Any, text: str) -> Any:
    """Parse the right-hand side of a ``key=value`` override for annotation ``tp``."""
    base, bounds = _bounds(tp)
    if bounds:
        return _check_value(key, tp, _parse_string(key, base, text))
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if text.lower() in ("none", "null") and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _parse_string(key, option, text)
            except ValueError:
                continue
        raise ValueError(f"config key '{key}': expected {_type_name(tp)}, got {text!r}")
    if origin is Literal:
        for allowed in typing.get_args(tp):
            if str(allowed) == text:
                return allowed
        raise ValueError(f"config key '{key}': expected {_type_name(tp)}, got {text!r}")
    if origin is list:
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(
                f"config key '{key}': expected {_type_name(tp)} written as JSON (e.g. [1,2]), got {text!r}"
            ) from None
        return _check_value(key, tp, decoded)
    if tp is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    elif tp is int:
        try:
            return int(text)
        except ValueError:
            pass
    elif tp is float:
        try:
            return float(text)
        except ValueError:
            pass
    elif tp is str:
        return text
    raise ValueError(f"config key '{key}': expected {_type_name(tp)}, got {text!r}")


# ---------------------------------------------------------------------------------------------
# Dataclass <-> dict
# ---------------------------------------------------------------------------------------------


def _fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation of a config dataclass."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def config_from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build config dataclass ``cls`` from a (partial) dict; missing fields keep their defaults.

    Raises:
        ValueError: on an unknown key or a value of the wrong type (the message names the key).
    """
    if not isinstance(data, dict):
        raise ValueError(f"config section '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {data!r}")
    known = _fields(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = prefix + key
        if key not in known:
            raise ValueError(f"unknown config key '{dotted}' (known: {', '.join(sorted(known))})")
        tp = known[key]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[key] = config_from_dict(tp, value, prefix=dotted + ".")
        else:
            kwargs[key] = _check_value(dotted, tp, value)
    cfg = cls(**kwargs)
    if not prefix:
        check_config(cfg)
    return cfg


def _problems(cfg: Any, prefix: str) -> Iterator[str]:
    for name, tp in _fields(type(cfg)).items():
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(tp):
            yield from _problems(value, f"{prefix}{name}.")
            continue
        try:
            _check_value(prefix + name, tp, value)
        except ValueError as err:
            yield str(err)
    checks = getattr(cfg, "checks", None)
    if checks is not None:
        for key, problem in checks():
            yield f"config key '{prefix}{key}': {problem}"


def check_config(cfg: Any) -> None:
    """Raise ``ValueError`` for the first field of ``cfg`` (recursively) out of type or range, or
    any problem the config types' ``checks()`` report; the message names the dotted key."""
    for problem in _problems(cfg, ""):
        raise ValueError(problem)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON-compatible nested dicts (round-trips through config_from_dict)."""
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: C, overrides: list[str] | tuple[str, ...]) -> C:
    """Return a copy of ``cfg`` with ``key=value`` overrides applied (dotted keys for nested fields).

    Raises:
        ValueError: for a malformed override, an unknown key, a key naming a whole section, or a
            value that does not parse as the field's type.
    """
    cfg = _deepcopy(cfg)
    for override in overrides:
        if "=" not in override:
            raise ValueError(f"override {override!r} is not of the form key=value")
        key, text = override.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        target = cfg
        for depth, part in enumerate(parts):
            known = _fields(type(target))
            where = ".".join(parts[:depth]) or "<root>"
            if part not in known:
                raise ValueError(
                    f"unknown config key '{key}' ('{part}' is not a field of '{where}'; "
                    f"known: {', '.join(sorted(known))})"
                )
            tp = known[part]
            if depth < len(parts) - 1:
                if not dataclasses.is_dataclass(tp):
                    raise ValueError(f"unknown config key '{key}' ('{'.'.join(parts[: depth + 1])}' has no fields)")
                target = getattr(target, part)
            else:
                if dataclasses.is_dataclass(tp):
                    raise ValueError(f"config key '{key}' is a section; set its fields with '{key}.<field>=...'")
                setattr(target, part, _parse_string(key, tp, text.strip()))
    check_config(cfg)
    return cfg


def _deepcopy(cfg: C) -> C:
    return config_from_dict(type(cfg), config_to_dict(cfg))


# Keys that change what a run logs, not what it computes: a run may resume with another value.
LOGGING_KEYS = frozenset({"train.tensorboard"})


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (for resume checks), ``LOGGING_KEYS`` aside."""
    keys = sorted(set(a) | set(b))
    out: list[str] = []
    for key in keys:
        if prefix + key in LOGGING_KEYS:
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(config_diff(va, vb, prefix + key + "."))
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} != {vb!r}")
    return out


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------


def _preset_dir() -> Any:
    return resources.files("idspn_experiments") / "presets"


def preset_names() -> list[str]:
    """Names of the presets shipped with the package (file names without ``.json``)."""
    return sorted(p.name[: -len(".json")] for p in _preset_dir().iterdir() if p.name.endswith(".json"))


def read_preset(name_or_path: str) -> dict[str, Any]:
    """Load a preset dict by name (``numbering-small``) or from a path to a JSON file.

    The dict must contain ``"experiment"``, the registered experiment it configures.

    Raises:
        ValueError: if no such preset exists or it names no experiment.
    """
    path = Path(name_or_path)
    if path.suffix == ".json":
        if not path.is_file():
            raise ValueError(f"preset file {name_or_path!r} does not exist or is not a file")
        source = path
    else:
        source = _preset_dir() / f"{name_or_path}.json"
        if not source.is_file():
            raise ValueError(f"unknown preset {name_or_path!r} (known: {', '.join(preset_names())})")
    try:
        data = json.loads(source.read_text())
    except UnicodeDecodeError:
        raise ValueError(f"preset file {str(source)!r} is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"preset file {str(source)!r} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("experiment"), str):
        raise ValueError(f"preset {name_or_path!r} must be a JSON object with an 'experiment' name")
    return data


def load_config(config_type: type[C], preset: str, overrides: list[str] | tuple[str, ...] = ()) -> C:
    """Config of type ``config_type`` from a preset (name or JSON path) plus ``key=value`` overrides.

    Raises:
        ValueError: for an unknown preset, a preset of another experiment, an unknown key or a
            value of the wrong type.
    """
    data = read_preset(preset)
    cfg = config_from_dict(config_type, data)
    expected = config_type().experiment  # type: ignore[attr-defined]
    if expected and data["experiment"] != expected:
        raise ValueError(f"preset {preset!r} configures {data['experiment']!r}, not {expected!r}")
    return apply_overrides(cfg, overrides)
