"""Resource limits shared by :class:`~fpliif.FaceParser`, ``fpliif parse`` and ``fpliif serve``.

* **pixels** (``max_pixels``): the largest image read, checked from the file's header before it is decoded,
  and the largest output of ``parse_aligned`` (explicit ``size`` or implied by the input). Default
  :data:`DEFAULT_MAX_PIXELS`, or the environment variable ``FPLIIF_MAX_PIXELS``: a positive integer in ASCII
  digits, ``_`` allowed between digits (``40_000_000``); unset, empty or blank: the default; anything else
  (``-5``, ``1e6``, ``abc``, ``0``) is refused with an error naming the variable. 0 as an argument (library and
  CLI, not the variable): no limit.
* **decoder work** (``max_points``): the implicit decoder's queries for one image: output pixels of each face
  (at most ``max_decode_size`` squared for a big face in a photo), twice with flip TTA, summed over the faces.
  Checked before decoding starts, so an oversized request is refused at once instead of running for minutes.
* **deadlines**: :func:`scope` sets a deadline (and optionally a work budget) for the code it wraps, in this
  thread or task only (a :mod:`contextvars` variable). Long loops call :func:`check_deadline` between chunks,
  which raises :class:`DeadlineExceeded` once it has passed: the service stops work whose client was already
  answered 504, instead of holding a worker.

    from fpliif import limits

    with limits.scope(deadline=10.0):         # seconds from now
        parser(photo)                         # DeadlineExceeded if still decoding after 10 s

No torch, numpy or Pillow here: the model's decode loop imports this module.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_POINTS",
    "MAX_PIXELS_ENV",
    "PIXELS_HINT",
    "Deadline",
    "DeadlineExceeded",
    "LimitError",
    "OverBudget",
    "TooManyPixels",
    "check_deadline",
    "check_pixels",
    "check_points",
    "default_max_pixels",
    "effective",
    "resolve_limit",
    "scope",
]

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image (and ``parse_aligned`` output) in pixels, for the library, the CLI and the service."""
DEFAULT_MAX_POINTS = 4096 * 4096
"""Most decoder queries per image for the library and ``fpliif parse`` (the service has its own, smaller)."""
MAX_PIXELS_ENV = "FPLIIF_MAX_PIXELS"
PIXELS_HINT = "raise it with --max-pixels, FaceParser(max_pixels=...) or $FPLIIF_MAX_PIXELS (--max-pixels 0: no limit)"


class LimitError(ValueError):
    """A refusal because a configured limit would be exceeded: ``name`` is the limit, ``value`` and ``limit``
    the asked and the allowed amounts, ``what`` the thing refused (a file, an output)."""

    def __init__(self, message: str, name: str, value: int, limit: int, what: str = ""):
        super().__init__(message)
        self.name = name
        self.value = int(value)
        self.limit = int(limit)
        self.what = what


class TooManyPixels(LimitError):
    """An image, or an output, with more pixels than ``max_pixels``."""


class OverBudget(LimitError):
    """Work (decoder queries) beyond ``max_points``."""


class DeadlineExceeded(RuntimeError):
    """The deadline set by :func:`scope` passed while the work was running."""


class Cancelled(RuntimeError):
    """The work was called off (:meth:`Deadline.cancel`) before it finished, e.g. because its client went away."""


def resolve_limit(value: int | None, name: str, default: int | None | Callable[[], int | None]) -> int | None:
    """A limit argument: None -> ``default`` (a callable is called only then, e.g. :func:`default_max_pixels`);
    0 -> None (no limit); else a positive int (ValueError naming it)."""
    if value is None:
        return default() if callable(default) else default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected an integer >= 0 (0: no limit), got {value!r}")
    return int(value) or None


_ENV_INTEGER = re.compile(r"[0-9]+(?:_[0-9]+)*")
"""ASCII digits with single ``_`` between them (``str.isdigit`` would take ``²`` and other Unicode digits)."""


def default_max_pixels() -> int:
    """:data:`DEFAULT_MAX_PIXELS`, or the positive integer in ``$FPLIIF_MAX_PIXELS`` (unset or blank: the default);
    ValueError naming the variable for any other value."""
    raw = os.environ.get(MAX_PIXELS_ENV, "")
    text = raw.strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    if not _ENV_INTEGER.fullmatch(text) or int(text) < 1:
        raise ValueError(
            f"${MAX_PIXELS_ENV}: expected a positive integer number of pixels (digits, '_' allowed between them, "
            f"e.g. 40_000_000; unset or empty: the default {DEFAULT_MAX_PIXELS:,}), got {raw!r:.40}"
        )
    return int(text)


def check_pixels(width: int, height: int, limit: int | None, what: str, hint: str = PIXELS_HINT) -> None:
    """TooManyPixels naming ``what`` (a file, "output") if ``width x height`` exceeds ``limit`` (None: none)."""
    n = int(width) * int(height)
    if limit is not None and n > limit:
        raise TooManyPixels(
            f"{what}: {width}x{height} = {n:,} pixels, more than the limit of {limit:,}"
            + (f" ({hint})" if hint else ""),
            "max_pixels",
            n,
            limit,
            what,
        )


def check_points(points: int, limit: int | None, what: str, hint: str = "", per: str = "image") -> None:
    """OverBudget naming ``what`` if ``points`` decoder queries exceed ``limit`` (None: no limit) ``per`` image
    (or batch, ...)."""
    if limit is not None and points > limit:
        raise OverBudget(
            f"{what} needs {points:,} decoder queries, more than the limit of {limit:,} per {per}"
            + (f" ({hint})" if hint else ""),
            "max_points",
            points,
            limit,
            what,
        )


# ---------------------------------------------------------------------------------------------- deadlines
class Deadline:
    """A point in time (``time.monotonic``) by which work must stop; ``seconds`` is the allowance it stands for.
    :meth:`cancel` stops the work at its next check, deadline or not (another thread may call it)."""

    def __init__(self, seconds: float, at: float | None = None):
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"deadline: expected a positive number of seconds, got {seconds!r}")
        self.seconds = float(seconds)
        self.at = time.monotonic() + self.seconds if at is None else float(at)
        self.cancelled: str | None = None

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def cancel(self, reason: str) -> None:
        """Make every later :meth:`check` raise :class:`Cancelled` with ``reason``."""
        self.cancelled = str(reason)

    def check(self) -> None:
        if self.cancelled is not None:
            raise Cancelled(self.cancelled)
        if time.monotonic() >= self.at:
            raise DeadlineExceeded(f"the work did not finish within its {self.seconds:g} s deadline")

    def __repr__(self) -> str:
        return f"Deadline({self.seconds:g} s, {self.remaining():.3f} s left)"


@dataclass(frozen=True)
class _Scope:
    deadline: Deadline | None = None
    overrides: tuple[tuple[str, int | None], ...] = ()


_SCOPE: ContextVar[_Scope | None] = ContextVar("fpliif_limits", default=None)
_UNSET: Any = object()


@contextmanager
def scope(
    deadline: Deadline | float | None = None, max_points: int | None = _UNSET, max_pixels: int | None = _UNSET
) -> Iterator[None]:
    """Limits for the enclosed code in this thread / task: a deadline (seconds or a :class:`Deadline`), and
    ``max_points`` / ``max_pixels`` overriding a parser's own (None: no limit; left out: keep the parser's).
    Nested scopes keep the earliest deadline and inherit what they leave out."""
    outer = _SCOPE.get()
    dl = Deadline(deadline) if isinstance(deadline, (int, float)) else deadline
    if outer is not None and outer.deadline is not None and (dl is None or outer.deadline.at < dl.at):
        dl = outer.deadline
    overrides = dict(outer.overrides) if outer is not None else {}
    for name, value in (("max_points", max_points), ("max_pixels", max_pixels)):
        if value is not _UNSET:
            overrides[name] = resolve_limit(value, name, None)
    token = _SCOPE.set(_Scope(dl, tuple(overrides.items())))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def check_deadline() -> None:
    """Raise :class:`DeadlineExceeded` if the deadline of the enclosing :func:`scope` has passed, :class:`Cancelled`
    if it was cancelled (cheap)."""
    s = _SCOPE.get()
    if s is not None and s.deadline is not None:
        s.deadline.check()


def effective(name: str, own: int | None) -> int | None:
    """The limit ``name`` (``"max_points"`` or ``"max_pixels"``) in force: the enclosing :func:`scope`'s if it
    sets one, else ``own``."""
    s = _SCOPE.get()
    if s is not None:
        for key, value in s.overrides:
            if key == name:
                return value
    return own
