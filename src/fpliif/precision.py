"""Which autocast precision a device runs fast: ``auto`` picks bf16 only where the hardware has it natively.

On a CPU without native bf16 (e.g. AVX2 only) bf16 autocast takes emulated slow paths (13-29x slower than fp32
on the dev machine, docs/training.md); with AVX512-BF16 or AMX it is ~2.5x faster than fp32 for FP-LIIF training.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

AMP_CHOICES = ("auto", "none", "bf16", "fp16")
INFERENCE_AMP_CHOICES = (*AMP_CHOICES, "int8")
"""Inference also offers ``int8``: fp32 with the decoder MLP's hidden layers dynamically quantised
(:mod:`fpliif.quantize`, CPU only); ``auto`` never picks it (docs/performance.md)."""
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
DEFAULT_INFERENCE_AMP = "auto"
"""The precision of ``FaceParser``, ``fpliif parse``, the service and ``fpliif bench --photos`` when none is given:
bf16 where the device computes it natively, else fp32 (:func:`resolve_amp`). Its labels therefore depend on the
machine: on the val images bf16 labels 99.84 % of a photo's pixels as fp32 does, within the issue-12 bounds
(docs/performance.md, "Decisions"); ``amp="none"`` gives fp32 everywhere. ``fpliif eval`` stays fp32."""


def __getattr__(name: str) -> Any:
    """``AMP_DTYPES`` (amp setting -> torch dtype or None) is built on first use: importing this module
    (e.g. for :data:`AMP_CHOICES` in argument parsers) does not import torch."""
    if name == "AMP_DTYPES":
        import torch

        return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": None}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        return parse_cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return frozenset()


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The first ``flags`` (x86) or ``Features`` (ARM) line of /proc/cpuinfo text, as a set."""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True when ``device`` computes bf16 natively (CUDA with bf16 support; a CPU with AMX or AVX512-BF16, or
    an ARM CPU with the ``bf16`` feature); False for any other device (e.g. ``mps``)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "bf16" in cpu_flags()
    return any(flag in cpu_flags() for flag in NATIVE_BF16_CPU_FLAGS)


def resolve_amp(amp: str, device: torch.device | str = "cpu", inference: bool = False) -> str:
    """``none``/``bf16``/``fp16`` for an ``amp`` setting; ``auto`` = bf16 where native (see :func:`native_bf16`),
    else fp32. ``inference=True`` also accepts ``int8`` (CPU only; see :data:`INFERENCE_AMP_CHOICES`)."""
    choices = INFERENCE_AMP_CHOICES if inference else AMP_CHOICES
    if amp not in choices:
        hint = " (int8 is an inference option)" if amp == "int8" else ""
        raise ValueError(f"amp: expected one of {', '.join(choices)}, got {amp!r}{hint}")
    if amp == "auto":
        return "bf16" if native_bf16(device) else "none"
    import torch

    if amp == "int8" and torch.device(device).type != "cpu":
        raise ValueError(f"amp int8: dynamic int8 quantisation runs on the CPU only, got device {str(device)!r}")
    if amp == "fp16" and torch.device(device).type != "cuda":
        raise ValueError("amp fp16 needs a CUDA device; use bf16 (or auto) on CPU")
    return amp
