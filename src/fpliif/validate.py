"""Checks of integer arguments shared by the commands, the API and the models: lists of positive integers
(``--sizes 256,512``, ``sizes=(64, 128)``), output sizes (an int or (H, W)), and the argparse ``type`` of every
numeric command-line option (:func:`int_arg`, :func:`float_arg`: a bad value is a usage error naming the option,
exit code 2, before any work).

Standard library only, and nothing else of fpliif (like :mod:`fpliif.errors`), so argument parsing and the
ONNX Runtime path use it without importing torch. Every failure is a ValueError starting with the argument's
name.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "MAX_THREADS",
    "check_int",
    "check_size",
    "cpu_count",
    "float_arg",
    "int_arg",
    "parse_int_list",
    "positive_ints",
]

MAX_THREADS = 1024
DEVICES = ("cpu", "cuda")  # where a model can run: the --device choices of every command and the service
"""Most CPU threads or worker processes an option may ask for (torch's thread count is a C int; more than this
is a typo, not a machine)."""


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _integer(value: Any) -> int | None:
    """``value`` as an int if it is an integral number (not a bool, not 2.5, not "3"), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        as_int = int(value)
    except (OverflowError, ValueError):  # inf, nan
        return None
    return as_int if as_int == value else None


def positive_ints(values: Iterable[Any], name: str, allow_empty: bool = False) -> list[int]:
    """Positive integers, in order, duplicates dropped; ``allow_empty`` accepts none at all."""
    values = list(values)
    ints = [_integer(v) for v in values]
    if any(v is None or v <= 0 for v in ints):
        raise ValueError(f"{name}: expected positive integers, got {values!r:.200}")
    if not ints and not allow_empty:
        raise ValueError(f"{name}: expected at least one positive integer, got none")
    return list(dict.fromkeys(ints))


def parse_int_list(text: str, name: str, allow_empty: bool = False) -> list[int]:
    """``"256, 512"`` -> [256, 512]: comma-separated positive integers (as :func:`positive_ints`)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated integers, got {text!r:.200}") from None
    return positive_ints(values, name, allow_empty)


def check_int(
    value: Any, name: str, low: int | None = None, high: int | None = None, allow_none: bool = False
) -> int | None:
    """``value`` as an int in [``low``, ``high``] (None: unbounded): an integral number, not a bool, 2.5 or "3";
    None passes only with ``allow_none``. ValueError naming ``name`` otherwise."""
    if value is None and allow_none:
        return None
    v = _integer(value)
    if v is None or (low is not None and v < low) or (high is not None and v > high):
        accepted = _bounds("an integer", low, high) + (" or None" if allow_none else "")
        raise ValueError(f"{name}: expected {accepted}, got {value!r:.100}")
    return v


def check_size(size: Any, name: str = "size") -> tuple[int, int]:
    """An output size: a positive int (square) or a pair (H, W) of positive ints -> (H, W)."""
    pair = (size, size) if _integer(size) is not None else size
    try:
        h, w = (_integer(v) for v in pair)
    except (TypeError, ValueError):
        h = w = None
    if h is None or w is None:
        raise ValueError(f"{name}: expected an int or a pair of ints (H, W), got {size!r:.100}")
    if h <= 0 or w <= 0:
        raise ValueError(f"{name}: output size must be positive, got {(h, w)}")
    return h, w


def _bounds(kind: str, low: float | None, high: float | None, low_open: bool = False) -> str:
    """``"an integer >= 1"``, ``"a number in [0, 1]"``, ``"a number > 0"``: the accepted range in words."""
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low:g}"
    return kind if high is None else f"{kind} <= {high:g}"


def int_arg(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: the option's text as an integer in [``low``, ``high``] (None: unbounded). A refusal
    is an ``ArgumentTypeError``, which argparse prints as ``argument --x: expected ...`` with exit code 2."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {_bounds('an integer', low, high)}, got {text!r:.40}")
        return value

    parse.__name__ = "integer"
    return parse


def float_arg(low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: the option's text as a finite number in [``low``, ``high``] (``low_open``: > low);
    NaN and infinity are refused (see :func:`int_arg`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (low is None or value > low or (value == low and not low_open))
        if not ok or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"expected {_bounds('a finite number', low, high, low_open)}, got {text!r:.40}"
            )
        return value

    parse.__name__ = "number"
    return parse
