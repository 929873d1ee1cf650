"""``torch.compile`` for FP-LIIF inference: an option (``TorchBackend(compile=True)``, ``fpliif bench
--compile``), not a default; how it was decided: docs/performance.md.

The encoder and the per-query decoder (:meth:`fpliif.models.FPLIIF.query`) are compiled with dynamic shapes
(adaptive decoding queries a different number of points on every pass). On CPU, TorchInductor generates C++
and needs a C++ compiler and the Python headers at run time; the first calls pay the compilation (tens of
seconds). Where it cannot build kernels, ``compile`` fails up front with the reason (it never falls back to
eager silently: a benchmark or service that asked for it would report what it did not run).
"""

from __future__ import annotations

import functools
import os
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import torch


def cpp_compiler() -> str | None:
    """The C++ compiler TorchInductor would use on CPU (``$CXX``, else g++/c++/clang++ on PATH), or None."""
    for name in filter(None, (os.environ.get("CXX"), "g++", "c++", "clang++")):
        found = shutil.which(name)
        if found:
            return found
    return None


def compile_unavailable(device: torch.device | str = "cpu") -> str | None:
    """Why TorchInductor cannot compile for ``device`` here (None when it can): on CPU a C++ compiler and the
    Python headers must exist, and a tiny function must compile and run (checked once per process and device)."""
    device = torch.device(device)
    if device.type == "cpu":
        if cpp_compiler() is None:
            return "TorchInductor needs a C++ compiler on CPU (g++ or clang++, or $CXX); none found"
        headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
        if not headers.is_file():
            return f"TorchInductor needs the Python headers on CPU ({headers} is missing; install python3-dev)"
    return _probe(str(device))


@functools.cache
def _probe(device: str) -> str | None:
    """None if a tiny function compiles with TorchInductor and gives eager's result on ``device``, else why not."""
    x = torch.arange(8.0, device=device)
    try:
        out = torch.compile(lambda t: torch.relu(t * 2 - 3), dynamic=True)(x)
    except Exception as e:  # a failed toolchain surfaces as many exception types (CppCompileError, OSError, ...)
        return f"TorchInductor could not build a test kernel here: {type(e).__name__}: {str(e).strip()[:300]}"
    if not torch.equal(out, torch.relu(x * 2 - 3)):
        return "TorchInductor's test kernel gave a wrong result here"
    return None


def compile_model(model: Any, device: torch.device | str = "cpu") -> None:
    """Compile ``model``'s encoder and per-query decoder in place (same weights, same function); ValueError for
    a model without them, or where TorchInductor cannot compile (:func:`compile_unavailable`)."""
    if not isinstance(getattr(model, "encoder", None), torch.nn.Module) or not callable(getattr(model, "query", None)):
        raise ValueError(f"compile: compiles FP-LIIF's encoder and decoder; {type(model).__name__} has none")
    reason = compile_unavailable(device)
    if reason is not None:
        raise ValueError(f"compile: {reason}")
    model.encoder.compile(dynamic=True)
    model.query = torch.compile(model.query, dynamic=True)
