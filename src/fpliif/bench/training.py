"""Training-throughput benchmark (``fpliif bench --train``): images/s of full training steps on random data.

One step is the trainer's own :class:`~fpliif.train.step.TrainStep`, for any registered model: FP-LIIF's edge
map, query sampling (or the full grid) and forward at the query points; a dense model's forward at the mask's
size; or a model's own ``training_loss``; then the loss (cross-entropy + lambda * edge cross-entropy, tau = the
model's temperature), backward and an Adam step. Data loading is not included (random images and blocky random
label maps, made once).
"""

from __future__ import annotations

from typing import Any

import torch

from ..models import make as make_model
from ..models.checkpoint import DEFAULT_INPUT_SIZE
from ..precision import AMP_DTYPES, resolve_amp
from ..train.step import StepSettings, TrainStep, build_optimizer, objective_of
from .runner import bench_device, device_name, time_calls


def _random_masks(batch: int, size: int, num_classes: int, gen: torch.Generator, block: int = 16) -> torch.Tensor:
    """Label maps made of ``block``-sized squares, so the edge fraction is realistic (a few per cent)."""
    cells = -(-size // block)
    small = torch.randint(0, num_classes, (batch, cells, cells), generator=gen)
    return small.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :size, :size].contiguous()


def train_throughput(
    model_spec: dict[str, Any] | str | None = None,
    size: int = DEFAULT_INPUT_SIZE,
    batch_size: int = 4,
    amp: str = "none",
    queries: int | None = None,
    channels_last: bool = False,
    steps: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    device: str = "cpu",
    edge_lambda: float = 10.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Median images/s of ``steps`` timed training steps (after ``warmup`` untimed ones).

    ``model_spec``: registry spec or name (None = the default FP-LIIF); ``queries``: sampled query points
    per image, None = the full ``size``² grid (models trained on queries only; dense models always train on every
    pixel); ``amp``: none | bf16 | fp16 (fp16 on CUDA only). Returns a JSON-ready dict with ``img_per_s``,
    ``step_seconds`` (median), ``objective`` (:func:`~fpliif.train.step.objective_of`) and the settings.
    """
    for name, value, low in (
        ("size", size, 1),
        ("batch_size", batch_size, 1),
        ("steps", steps, 1),
        ("warmup", warmup, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    if queries is not None and (isinstance(queries, bool) or not isinstance(queries, int) or queries <= 0):
        raise ValueError(f"queries: expected a positive integer or None (full grid), got {queries!r}")
    dev = bench_device(device, threads)
    requested, amp = amp, resolve_amp(amp, dev)

    torch.manual_seed(seed)
    model = make_model(model_spec if model_spec is not None else "fpliif").to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    objective = objective_of(model)
    if queries is not None and objective != "queries":
        raise ValueError(f"queries: applies to models trained on sampled queries; this model is trained {objective}")
    optimizer = build_optimizer(model, lr=1e-4)
    gen = torch.Generator().manual_seed(seed)
    settings = StepSettings(edge_lambda=edge_lambda, sample_queries=queries, channels_last=channels_last)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == "fp16")
    step_fn = TrainStep(model, optimizer, settings, dev, amp_dtype=AMP_DTYPES[amp], scaler=scaler, query_gen=gen)

    image = torch.rand(batch_size, 3, size, size, generator=gen).to(dev)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    batch = {"image": image, "mask": _random_masks(batch_size, size, model.num_classes, gen)}

    timing = time_calls(lambda: step_fn(batch), steps, warmup, dev)
    step = timing.median
    return {
        "model": model.spec.get("name", type(model).__name__),
        "params": sum(p.numel() for p in model.parameters()),
        "size": size,
        "batch_size": batch_size,
        "amp": amp,
        "amp_requested": requested,
        "objective": objective,
        "queries": "full" if queries is None or queries >= size * size else queries,
        "channels_last": channels_last,
        "steps": steps,
        "warmup": warmup,
        "step_seconds": step,
        "img_per_s": batch_size / step,
        "loss": timing.last,
        "device": device_name(dev),
        "threads": torch.get_num_threads(),
    }


__all__ = ["train_throughput"]
