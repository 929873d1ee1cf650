"""Per-class logit offsets fitted on training images, folded into the decoder's last bias.

Class-balanced and boundary-focused query sampling (the default recipe) train the decoder under a label prior
that differs from the pixels' own, so it over-predicts rare and thin classes (earrings, brows, glasses) at the
expense of the large ones. A constant offset per class on the logits corrects a prior shift ("logit adjustment",
Menon et al., ICLR 2021). Here the offsets are fitted directly to the dataset-level mean F1 (background
excluded, as the paper scores) on evenly spaced images of the **train** split, by coordinate ascent over a grid,
and added to the bias of the model's final linear layer: every decoding path (dense, adaptive, TTA, ONNX, int8)
then applies them with no code of its own. FP-LIIF's local ensemble blends its four predictions with weights
that sum to one, so an offset on the last bias is exactly an offset on the logits.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm import tqdm

from ..labels import LabelSet
from .evaluate import _Decoder, _mask, summarize
from .metrics import ConfusionMatrix

OFFSETS_KEY = "logit_offsets"
"""Weights metadata key: the offsets (class -> value) already folded into the final bias, as JSON."""

DEFAULT_GRID = tuple(x / 4 for x in range(-8, 9))
"""Candidate changes of one class's offset per step (logit units)."""


@dataclass(frozen=True)
class Calibration:
    """Fitted offsets (class name -> logit offset) and the train mean F1 / per-class F1 before and after."""

    offsets: dict[str, float]
    mean_f1_before: float
    mean_f1_after: float
    per_class_before: dict[str, float | None]
    per_class_after: dict[str, float | None]
    images: int
    pixels: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def final_linear(model: torch.nn.Module) -> torch.nn.Linear:
    """The layer whose bias holds the logit offsets: the last layer of an implicit decoder's MLP."""
    mlp = getattr(model, "mlp", None)
    last = list(mlp)[-1] if isinstance(mlp, torch.nn.Sequential) and len(mlp) else None
    num_classes = getattr(model, "num_classes", None)
    if not isinstance(last, torch.nn.Linear) or last.bias is None or last.out_features != num_classes:
        raise ValueError(
            f"calibration needs a model whose logits come from a final nn.Linear with a bias (FP-LIIF's decoder "
            f"MLP); {type(model).__name__} has none"
        )
    return last


def collect_logits(
    model: torch.nn.Module, loader: Iterable[Mapping[str, Any]], size: int, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense logits (pixels, C) as float16 and labels (pixels,) at ``size`` output, ignored pixels dropped.

    Memory: about ``images * size**2 * C * 2`` bytes (320 images at 256, 19 classes: 0.8 GB).
    """
    logits, labels = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc="calibrate", unit="batch", file=sys.stderr, disable=not progress):
                image = batch["image"]
                out = _Decoder(model, image, model.label_set, decode="dense")(size)
                target = _mask(batch, size).reshape(-1)
                keep = target != 255
                logits.append(out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])[keep].to(torch.float16))
                labels.append(target[keep].to(torch.uint8))
    finally:
        model.train(was_training)
    if not logits:
        raise ValueError("calibration: the data loader yielded no images")
    return torch.cat(logits), torch.cat(labels)


def _scores(pred: torch.Tensor, labels: torch.Tensor, label_set: LabelSet) -> dict[str, Any]:
    """The eval row of ``pred`` against ``labels`` (both int64, checked once by :func:`fit_offsets`)."""
    c = label_set.num_classes
    cm = ConfusionMatrix(c)
    cm.matrix += torch.bincount(labels * c + pred, minlength=c * c).view(c, c)  # the hot loop: no re-checks
    return summarize(cm, label_set)


def fit_offsets(
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_set: LabelSet,
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    rounds: int = 2,
    min_gain: float = 0.02,
    images: int = 0,
) -> Calibration:
    """Coordinate ascent on per-class offsets maximising the mean F1 of ``argmax(logits + offsets)``.

    Each step tries every change in ``grid`` for one class and keeps the best if it gains more than ``min_gain``
    points of mean F1 (so noise-level changes are not taken); ``rounds`` passes over all classes.
    """
    if logits.dim() != 2 or logits.shape[1] != label_set.num_classes or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits (pixels, {label_set.num_classes}) and labels (pixels,) expected")
    scores = logits.float()
    target = labels.long()
    ConfusionMatrix(label_set.num_classes).update(target, target)  # label range check, once
    offsets = torch.zeros(label_set.num_classes)
    before = _scores(scores.argmax(1), target, label_set)
    best = before["mean_f1"]
    for _ in range(rounds):
        for k in range(label_set.num_classes):
            others = scores + offsets
            others[:, k] = -float("inf")
            rival, rival_class = others.max(1)
            own = scores[:, k] + offsets[k]
            step = 0.0
            for d in grid:
                pred = torch.where(own + d > rival, torch.full_like(rival_class, k), rival_class)
                value = _scores(pred, target, label_set)["mean_f1"]
                if value > best + min_gain:
                    best, step = value, float(d)
            offsets[k] += step
    after = _scores((scores + offsets).argmax(1), target, label_set)
    return Calibration(
        offsets={c: float(offsets[i]) for i, c in enumerate(label_set.classes)},
        mean_f1_before=before["mean_f1"],
        mean_f1_after=after["mean_f1"],
        per_class_before=before["per_class_f1"],
        per_class_after=after["per_class_f1"],
        images=images,
        pixels=int(labels.numel()),
    )


def apply_offsets(model: torch.nn.Module, offsets: Mapping[str, float]) -> dict[str, str]:
    """Add ``offsets`` (class -> logit offset) to the final bias in place; returns the metadata to record.

    Offsets already in the model's metadata (an earlier calibration) are added to, so the recorded value is
    always the total folded into the bias.
    """
    layer = final_linear(model)
    classes = list(model.classes)
    unknown = sorted(set(offsets) - set(classes))
    if unknown:
        raise ValueError(f"offsets: unknown classes {unknown} (the model's: {classes})")
    delta = torch.tensor([float(offsets.get(c, 0.0)) for c in classes], dtype=layer.bias.dtype)
    with torch.no_grad():
        layer.bias.add_(delta.to(layer.bias.device))
    previous = recorded_offsets(model)
    total = {c: round(previous.get(c, 0.0) + float(offsets.get(c, 0.0)), 6) for c in classes}
    return {OFFSETS_KEY: json.dumps(total)}


def recorded_offsets(model: torch.nn.Module) -> dict[str, float]:
    """The offsets (class -> value) the model's weight file records as folded into its bias ({} if none)."""
    meta = getattr(model, "weights_metadata", None) or {}
    return {c: float(v) for c, v in json.loads(meta.get(OFFSETS_KEY, "{}")).items()}


def remove_offsets(model: torch.nn.Module) -> dict[str, float]:
    """Subtract the recorded offsets from the final bias in place (the model as trained, before calibration);
    returns what was removed. Training from a calibrated file starts here: the offsets fit the file's final
    weights, and a later calibration fits its own."""
    removed = {c: v for c, v in recorded_offsets(model).items() if v}
    if removed:
        apply_offsets(model, {c: -v for c, v in removed.items()})
    return removed


def strided(n_items: int, n_pick: int) -> list[int]:
    """Every ``n_items // n_pick``-th index from 0, the first ``n_pick`` of them (all if ``n_pick >= n_items``)."""
    step = max(1, n_items // n_pick)
    return list(range(0, n_items, step))[:n_pick]
