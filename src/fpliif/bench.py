"""Speed benchmark: parameters, MACs and frames per second per output size (``fpliif bench``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from .flops import count_macs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_onnx_fps(model: Any, input_size: int, output_size: int, runs: int, warmup: int = 2) -> float:
    """Median frames/s of an :class:`~fpliif.infer.onnx_backend.OnnxModel` (numpy in, numpy out)."""
    import numpy as np

    image = np.random.default_rng(0).random((1, 3, input_size, input_size), dtype=np.float32)
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        model(image, size=output_size)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1.0 / statistics.median(times)


def measure_fps(
    model: torch.nn.Module, input_size: int, output_size: int, device: torch.device, runs: int, warmup: int = 2
) -> float:
    """Median frames/s of ``model(image, size)`` over ``runs`` timed runs after ``warmup`` runs."""
    image = torch.rand(1, 3, input_size, input_size, device=device)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            _sync(device)
            t0 = time.perf_counter()
            model(image, size=output_size)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return 1.0 / statistics.median(times)


def run_bench(
    model: torch.nn.Module,
    sizes: Sequence[int] = (64, 96, 128, 192, 256),
    input_size: int = 256,
    device: str = "cpu",
    runs: int = 5,
    threads: int | None = None,
    onnx_model: Any = None,
) -> dict[str, Any]:
    """Parameters, MACs and FPS of ``model`` for each output size, as a JSON-ready dict.

    With ``onnx_model`` (an :class:`~fpliif.infer.onnx_backend.OnnxModel` of the same network) the FPS are
    measured on ONNX Runtime (CPU); MACs and parameters are the network's, counted on ``model``.
    """
    if threads is not None and threads <= 0:
        raise ValueError(f"--threads: must be positive, got {threads}")
    if runs <= 0:
        raise ValueError(f"--runs: must be positive, got {runs}")
    if input_size <= 0:
        raise ValueError(f"--input-size: must be positive, got {input_size}")
    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine")
    model = model.eval()
    macs = {str(s): count_macs(model, (input_size, input_size), s) for s in sizes}
    if onnx_model is not None:
        if dev.type != "cpu":
            raise ValueError("--backend onnxruntime: benchmarks run on the CPU provider only (use --device cpu)")
        fps = {str(s): measure_onnx_fps(onnx_model, input_size, s, runs) for s in sizes}
    else:
        model = model.to(dev)
        fps = {str(s): measure_fps(model, input_size, s, dev, runs) for s in sizes}
    return {
        "model": getattr(model, "spec", {}).get("name", type(model).__name__),
        "params": sum(p.numel() for p in model.parameters()),
        "input_size": input_size,
        "macs": macs,
        "fps": fps,
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "threads": threads if onnx_model is not None and threads else torch.get_num_threads(),
        "backend": "onnxruntime" if onnx_model is not None else "torch",
        "torch": torch.__version__,
    }
