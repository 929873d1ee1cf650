"""Checks of integer arguments shared by the commands, the API and the models: lists of positive integers
(``--sizes 256,512``, ``sizes=(64, 128)``) and output sizes (an int or (H, W)).

Standard library only, and nothing else of fpliif (like :mod:`fpliif.errors`), so argument parsing and the
ONNX Runtime path use it without importing torch. Every failure is a ValueError starting with the argument's
name.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

__all__ = ["check_size", "parse_int_list", "positive_ints"]


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
