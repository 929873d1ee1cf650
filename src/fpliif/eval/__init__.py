"""Evaluation: dataset-level confusion matrices, the paper's F1 / IoU tables, and ``fpliif eval``.

Names load lazily, so ``fpliif.eval.cli`` (argument parsing) does not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_LAZY = {
    "evaluate": "evaluate",
    "format_table": "evaluate",
    "trivial_baseline": "evaluate",
    "ConfusionMatrix": "metrics",
}

__all__ = ["ConfusionMatrix", "evaluate", "format_table", "trivial_baseline"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """``fpliif.eval.evaluate`` stays the function: importing the submodule of that name later would
    otherwise rebind the package attribute to the module (the eager ``from .evaluate import evaluate``
    of earlier versions made it the function, and ``from fpliif.eval import evaluate`` relies on it)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "evaluate" and isinstance(value, types.ModuleType):
            value = value.evaluate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
