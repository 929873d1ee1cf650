"""One registry for every model: ``name -> constructor``; a spec ``{"name": ..., "args": {...}}`` builds one.

It imports no model (as timm's ``_registry``): each architecture registers itself when its module is imported.
The :mod:`fpliif.models` package (imported before this module, as its parent) hands the import of the built-in
architectures to :func:`on_first_lookup`, so every lookup here sees them and importing stays free of torch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

_MODELS: dict[str, Callable[..., Any]] = {}
_LOADERS: list[Callable[[], None]] = []


def on_first_lookup(load: Callable[[], None]) -> None:
    """Run ``load`` before the next lookup (``make``, ``available``, ``constructor``, ``check_*``).

    :mod:`fpliif.models` hands the import of its built-in architectures here, so importing the package (or this
    module) imports no model and no torch, and every lookup sees the built-ins.
    """
    _LOADERS.append(load)


def _registered() -> dict[str, Callable[..., Any]]:
    """The registered constructors, after running the pending :func:`on_first_lookup` loaders."""
    while _LOADERS:
        _LOADERS.pop(0)()
    return _MODELS


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
    build = constructor(spec["name"])
    args = copy.deepcopy(dict(spec.get("args") or {}))
    args.update(overrides)
    return build(**args)


def check_args(spec: dict[str, Any] | str, where: str = "model") -> None:
    """Check a spec against the registry without building anything: ``name`` is registered and every key of
    ``args`` is a parameter of its constructor (by signature; a constructor taking ``**kwargs`` takes any).

    Raises :class:`~fpliif.errors.ConfigError` naming ``{where}.name`` or ``{where}.args.KEY`` and the
    closest valid name.
    """
    import inspect

    from ..errors import ConfigError

    if isinstance(spec, str):
        spec = {"name": spec, "args": {}}
    if not isinstance(spec, dict):
        raise ConfigError(where, f"expected a mapping {{name: ..., args: {{...}}}}, got {spec!r}")
    name = spec.get("name")
    check_name(name, f"{where}.name")
    args = spec.get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(f"{where}.args", f"expected a mapping of constructor arguments, got {args!r}")
    params = inspect.signature(constructor(name)).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in args:
        if key not in valid:
            raise ConfigError.unknown_key(f"{where}.args.{key}", valid)
    missing = [k for k in valid if params[k].default is inspect.Parameter.empty and k not in args]
    if missing:
        raise ConfigError(f"{where}.args", f"model {name!r} needs {', '.join(missing)}")


def check_name(name: Any, key: str = "model") -> str:
    """``name`` if it is a registered model, else :class:`~fpliif.errors.ConfigError` naming ``key``, the
    closest registered name and all of them."""
    from ..errors import ConfigError, closest

    if name not in available():
        close = closest(name, available()) if isinstance(name, str) else None
        hint = f"; did you mean {close!r}?" if close else ""
        raise ConfigError(key, f"unknown model {name!r}{hint} (registered: {', '.join(available())})")
    return name


def available() -> list[str]:
    """Names of all registered models."""
    return sorted(_registered())


def constructor(name: str) -> Callable[..., Any]:
    """The constructor registered under ``name`` (KeyError listing the registered ones if none)."""
    if name not in _registered():
        raise KeyError(f"unknown model {name!r}; registered: {available()}")
    return _MODELS[name]
