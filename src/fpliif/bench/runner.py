"""What every benchmark shares (inference, photos, training): the device and thread setup, and one timing loop.

:func:`time_calls` runs a call ``warmup`` times untimed-for-the-median, then ``runs`` times, synchronising the
CUDA device around each call, and reports the median and the first call's seconds (under ``torch.compile`` the
first call includes compiling).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds of a timed call: ``median`` of the timed runs, ``first`` (the first call, warm-up included), and
    what the ``last`` call returned."""

    median: float
    first: float
    last: Any


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], runs: int, warmup: int = 0, device: torch.device | None = None) -> Timing:
    """Call ``fn()`` ``warmup + runs`` times and time each (``device``: synchronise it around every call, so
    queued CUDA work is counted); the median is over the ``runs`` calls after the warm-up ones."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs: expected >= 1 timed runs and >= 0 warm-up runs, got {runs} and {warmup}")
    times: list[float] = []
    last: Any = None
    for _ in range(warmup + runs):
        _sync(device)
        t0 = time.perf_counter()
        last = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return Timing(median=statistics.median(times[warmup:]), first=times[0], last=last)


def bench_device(device: str, threads: int | None) -> torch.device:
    """Set torch's thread count (``threads``, None: leave it) and return the torch device; ValueError naming
    the option for a non-positive thread count or a CUDA device on a machine without CUDA."""
    if threads is not None:
        if threads <= 0:
            raise ValueError(f"--threads: must be positive, got {threads}")
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine")
    return dev


def device_name(dev: torch.device) -> str:
    """How results name the device: ``cpu``, or the CUDA device's product name."""
    return str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev)


__all__ = ["Timing", "bench_device", "device_name", "time_calls"]
