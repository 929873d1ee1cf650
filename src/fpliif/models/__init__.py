"""Models: the architectures, the factory over :mod:`.registry`, weight files (:mod:`.checkpoint`) and bundled
weights (:mod:`.pretrained`).

Importing this package imports no torch (the ONNX Runtime path reads weight metadata through
:mod:`.checkpoint`). The built-in architectures are imported, and so registered, on the registry's first lookup:
``make``, ``available``, ``constructor``, ``check_args`` and ``check_name`` (the registry's functions) always see
them, as does naming a class here (``fpliif.models.FPLIIF``).
"""

from __future__ import annotations

import importlib
from typing import Any

from . import registry
from .registry import available, check_args, check_name, constructor, make

_LAZY = {
    "FPLIIF": "fpliif",
    "SegFaceMNV3": "segface",
    "STNiCNN": "stn_icnn",
    "SegmentationModel": "base",
    "pixel_centers": "base",
}

__all__ = [
    "FPLIIF",
    "STNiCNN",
    "SegFaceMNV3",
    "SegmentationModel",
    "available",
    "check_args",
    "check_name",
    "constructor",
    "make",
    "pixel_centers",
]


def _import_builtins() -> None:
    from . import fpliif, segface, stn_icnn  # noqa: F401 - each module registers its architecture


registry.on_first_lookup(_import_builtins)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
