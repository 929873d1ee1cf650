"""Training: configs, the FP-LIIF loss and the (distributed, resumable) training loop.

Names load lazily, so ``fpliif.train.cli`` (argument parsing) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"load_config": "config", "fpliif_loss": "loss", "label_edges": "loss"}

__all__ = ["fpliif_loss", "label_edges", "load_config"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
