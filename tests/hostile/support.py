"""Helpers of the hostile-input cases: every case is a clear error or the right result.

Each case's id starts with its category (``library``, ``cli``, ``faults``, ``concurrency``) and its
expected answer (``clear``: an error that names the argument, config key or file, the value and
what is allowed; ``correct``: the right result). ``python -m pytest tests/hostile --co -q`` lists
them; a failing case is an obscure error or a silently wrong result.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CLEVR_FIXTURE = Path(__file__).resolve().parents[1] / "data" / "clevr-blender-val4"  # four real-format scenes


@dataclass(frozen=True)
class Clear:
    """The call raises ``error`` whose message matches ``match`` (a regex)."""

    error: type[BaseException] | tuple[type[BaseException], ...]
    match: str


@dataclass(frozen=True)
class Correct:
    """The call returns a value for which ``check(value)`` holds (raises AssertionError otherwise)."""

    check: Callable[[Any], object]


def run_case(call: Callable[[], Any], expected: Clear | Correct) -> None:
    """Run ``call`` and hold it to ``expected``."""
    if isinstance(expected, Clear):
        with pytest.raises(expected.error) as info:
            call()
        message = str(info.value)
        assert re.search(expected.match, message), f"message {message!r} does not match {expected.match!r}"
        assert "Traceback" not in message
    else:
        result = expected.check(call())
        assert result is None or result is True, result


def cases(category: str, table: dict[str, tuple[Callable[[], Any], Clear | Correct]]) -> Any:
    """``pytest.mark.parametrize`` over ``table``, ids ``<category>-<clear|correct>-<name>``."""
    params = [
        pytest.param(call, expected, id=f"{category}-{'clear' if isinstance(expected, Clear) else 'correct'}-{name}")
        for name, (call, expected) in table.items()
    ]
    return pytest.mark.parametrize(("call", "expected"), params)
