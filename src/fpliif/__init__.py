"""fpliif: FP-LIIF face parsing (Sarkar et al., CVPR 2023) in PyTorch.

Top-level names load lazily, so ``import fpliif`` (and the ONNX Runtime path of ``fpliif parse``)
works without importing torch until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FaceParser": "fpliif.infer.parser",
    "load": "fpliif.models.checkpoint",
    "save": "fpliif.models.checkpoint",
    "read_metadata": "fpliif.models.checkpoint",
    "WeightsMetadata": "fpliif.models.checkpoint",
    "make": "fpliif.models",
    "available": "fpliif.models",
    "models": "fpliif.models",
}
__all__ = ["FaceParser", "WeightsMetadata", "__version__", "available", "load", "make", "read_metadata", "save"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fpliif' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if name == "models" else getattr(module, name)
