"""``torch.compile`` for FP-LIIF inference: an option (``TorchBackend(compile=True)``, ``fpliif bench
--compile``), not a default; how it was decided: docs/performance.md.

The encoder and the per-query decoder (:meth:`fpliif.models.FPLIIF.query`) are compiled with dynamic shapes
(adaptive decoding queries a different number of points on every pass). On CPU, TorchInductor generates C++
and needs a C++ compiler at run time; the first calls pay the compilation (tens of seconds).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import torch


def cpp_compiler() -> str | None:
    """The C++ compiler TorchInductor would use on CPU (``$CXX``, else g++/c++/clang++ on PATH), or None."""
    for name in filter(None, (os.environ.get("CXX"), "g++", "c++", "clang++")):
        found = shutil.which(name)
        if found:
            return found
    return None


def compile_model(model: Any, device: torch.device | str = "cpu") -> None:
    """Compile ``model``'s encoder and per-query decoder in place (same weights, same function); ValueError for
    a model without them, or on a CPU without a C++ compiler."""
    if not isinstance(getattr(model, "encoder", None), torch.nn.Module) or not callable(getattr(model, "query", None)):
        raise ValueError(f"compile: compiles FP-LIIF's encoder and decoder; {type(model).__name__} has none")
    if torch.device(device).type == "cpu" and cpp_compiler() is None:
        raise ValueError("compile: TorchInductor needs a C++ compiler on CPU (g++ or clang++, or $CXX); none found")
    model.encoder.compile(dynamic=True)
    model.query = torch.compile(model.query, dynamic=True)
