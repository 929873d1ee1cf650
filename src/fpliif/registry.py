"""One registry for every model: ``name -> constructor``; a spec ``{"name": ..., "args": {...}}`` builds one."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

_MODELS: dict[str, Callable[..., Any]] = {}


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class/function decorator adding a model constructor under ``name``."""

    def decorator(cls: Callable[..., Any]) -> Callable[..., Any]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = cls
        return cls

    return decorator


def make(spec: dict[str, Any] | str, **overrides: Any) -> Any:
    """Build a model from a spec dict (``{"name": str, "args": dict}``) or a bare registered name."""
    if isinstance(spec, str):
        spec = {"name": spec, "args": {}}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"model spec must be a name or a dict with a 'name' key, got {spec!r}")
    name = spec["name"]
    _import_builtin_models()
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {available()}")
    args = copy.deepcopy(dict(spec.get("args") or {}))
    args.update(overrides)
    return _MODELS[name](**args)


def available() -> list[str]:
    """Names of all registered models."""
    _import_builtin_models()
    return sorted(_MODELS)


def _import_builtin_models() -> None:
    """Importing fpliif.models registers the built-in architectures."""
    import fpliif.models  # noqa: F401
