"""The package's error types. This module imports nothing else of fpliif (nor anything heavy), so the same
class objects are seen however the package is entered (``fpliif``, ``python -m fpliif``, ``-m fpliif.cli``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ConfigError", "DataError", "UserError", "closest"]


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""


class DataError(ValueError):
    """A bad dataset file or pair (the message names the file and the problem)."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


class ConfigError(ValueError):
    """An invalid setting: the message starts with the full key path (``train.schedule.milestones: ...``)."""

    def __init__(self, key: str, reason: str, source: str | None = None) -> None:
        message = f"{key}: {reason}" if key else reason
        super().__init__(f"{source}: {message}" if source else message)
        self.key = key
        self.reason = reason
        self.source = source

    @classmethod
    def unknown_key(cls, key: str, valid: Iterable[str]) -> ConfigError:
        """``key`` (a full path such as ``train.schedule.milestone``) is not one of ``valid`` (names beside it)."""
        parent, _, name = key.rpartition(".")
        valid = [str(v) for v in valid]
        close = closest(name, valid)
        if close:
            return cls(key, f"unknown key; did you mean {parent + '.' if parent else ''}{close}?")
        return cls(key, f"unknown key (valid keys{' in ' + parent if parent else ''}: {', '.join(valid)})")


def closest(name: object, valid: Iterable[str]) -> str | None:
    """The valid name closest to ``name`` (difflib), or None when none is close."""
    matches = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None
