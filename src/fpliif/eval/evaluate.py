"""Dataset evaluation at several output resolutions (the paper's Tables 1-3) and a trivial baseline.

Rows, named as in the paper:

* ``"256"`` (native) and ``"512"``: decode the 256 x 256 input at that output size and compare with
  the ground-truth mask of the same size (``Ours`` and ``Ours^512``);
* ``"64→256"``, ``"96→256"``, ...: decode at 64, 96, ..., upsample the *logits* bilinearly
  (``align_corners=False``) to 256 and compare with the 256 mask (``Ours^{64→256}``, ...).

Each image is encoded once and every row is decoded from the same latent grid (models with
``encode``/``decode``; other models are called as ``model(image, size=...)`` per row). Metrics are
dataset-level (counts summed over all pixels, see :mod:`fpliif.eval.metrics`); the background (class 0,
whatever its name) is left out of the means, and a class absent from both ground truth and prediction is
reported as ``None`` and left out of the means too (listed under ``absent_classes``).

With ``tta=True`` every row uses flip test-time augmentation (:func:`fpliif.infer.tta.flip_tta_logits`):
the mirrored batch is encoded too, and the averaged probabilities (as ``T * log p``, in place of the
logits, also for the low-resolution rows' upsampling) are scored.

With ``decode="adaptive"`` every row is decoded coarse to fine (:func:`fpliif.adaptive.adaptive_decode`:
dense on a coarse grid, then re-queried only where the prediction is uncertain) instead of at every pixel;
``points_per_image`` in the result says how many query points each row decoded per image.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..adaptive import AdaptiveOptions, adaptive_decode, check_decode_mode, is_implicit
from ..labels import BACKGROUND_INDEX, IGNORE_INDEX, LabelSet, as_label_set, remap_confusion
from ..models.checkpoint import DEFAULT_INPUT_SIZE
from ..validate import positive_ints
from .metrics import ConfusionMatrix

__all__ = ["evaluate", "format_table", "trivial_baseline", "row_name", "ABSENT_RULE"]

ARROW = "→"
ABSENT_RULE = (
    "a class absent from both ground truth and prediction (TP = FP = FN = 0) has undefined F1/IoU: "
    "reported as null and left out of the means"
)


# ------------------------------------------------------------------------------------------------ helpers
def row_name(out_size: int, target_size: int) -> str:
    """``"256"`` for a native row, ``"64→256"`` for a low-resolution row upsampled to 256."""
    return str(out_size) if out_size == target_size else f"{out_size}{ARROW}{target_size}"


def excluded_classes(label_set: LabelSet) -> tuple[int, ...]:
    """Class indices left out of the means: the background, class 0 whatever its name (as the paper)."""
    return (BACKGROUND_INDEX,)


def merged_groups(label_set: LabelSet) -> dict[str, tuple[int, ...]]:
    """``label_set.merged_f1`` (group -> class names) as group -> class indices."""
    return {g: tuple(label_set.index(c) for c in members) for g, members in label_set.merged_f1.items()}


def summarize(cm: ConfusionMatrix, label_set: LabelSet) -> dict[str, Any]:
    """One row of results (JSON-ready) from a confusion matrix, classes named after ``label_set``."""
    groups = merged_groups(label_set)
    r = cm.compute(exclude=excluded_classes(label_set), merged=groups or None)
    names = label_set.classes
    row: dict[str, Any] = {
        "mean_f1": r["mean_f1"],
        "mean_iou": r["mean_iou"],
        "pixel_acc": r["pixel_acc"],
        "per_class_f1": dict(zip(names, r["f1"], strict=True)),
        "per_class_iou": dict(zip(names, r["iou"], strict=True)),
        "absent_classes": [names[k] for k in r["absent"]],
        "pixels": r["pixels"],
    }
    if groups:
        row["merged_f1"] = r["merged_f1"]
        row["merged_iou"] = r["merged_iou"]
    return row


def _mask(batch: Mapping[str, Any], size: int) -> torch.Tensor:
    masks = batch.get("masks")
    if not isinstance(masks, Mapping):
        raise ValueError("batch: expected a 'masks' dict {size: (B, size, size) label tensor}")
    for key in (size, str(size)):
        if key in masks:
            return masks[key]
    raise ValueError(
        f"batch has no ground-truth mask at size {size} (masks at {sorted(str(k) for k in masks)}); "
        f"build the eval transform with mask_sizes including {size}"
    )


def _is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if _is_distributed() else 0


def _all_reduce_int(value: int, device: torch.device) -> int:
    if not _is_distributed():
        return value
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        dev = device if device.type == "cuda" else torch.device("cuda")
    else:
        dev = torch.device("cpu")
    t = torch.tensor([value], dtype=torch.int64, device=dev)
    dist.all_reduce(t)
    return int(t.item())


def _all_reduce_float(value: float, device: torch.device) -> float:
    if not _is_distributed():
        return value
    import torch.distributed as dist

    dev = (device if device.type == "cuda" else torch.device("cuda")) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return float(t.item())


class _Decoder:
    """Logits of one image batch at any output size, encoding the batch only once when possible.

    ``tta``: flip test-time augmentation (needs ``encode``/``decode``); the logits are then ``T * log`` of
    the averaged probabilities, ``T`` the model's temperature. ``decode``: ``"dense"`` or ``"adaptive"``
    (coarse to fine; needs ``encode``/``decode``). Models with ``prepare``/``decode_prepared`` (FP-LIIF)
    prepare their latent grid once for all rows. ``points`` is the number of query points the last call
    decoded per image (flip TTA decodes each point twice).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        image: torch.Tensor,
        label_set: LabelSet,
        tta: bool = False,
        decode: str = "dense",
        adaptive: AdaptiveOptions | Mapping[str, Any] | None = None,
    ):
        self.model = model
        self.image = image
        self.mirrored = None
        self.mode = decode
        self.adaptive = adaptive
        self.points = 0
        self.temperature = float(getattr(model, "temperature", 1.0))
        enc, dec = getattr(model, "encode", None), getattr(model, "decode", None)
        if tta:  # evaluate() checked that the model has encode/decode
            from ..infer.tta import flip_channels, mirror_images

            self.latent, self.mirrored = enc(torch.cat([image, mirror_images(image)])).chunk(2)
            self.channels = flip_channels(getattr(model, "label_set", None) or label_set)
        else:
            self.latent = enc(image) if callable(enc) and callable(dec) else None
        self.decode_fn = dec
        prepare, prepared = getattr(model, "prepare", None), getattr(model, "decode_prepared", None)
        if self.latent is not None and callable(prepare) and callable(prepared):
            self.latent = prepare(self.latent)
            self.mirrored = None if self.mirrored is None else prepare(self.mirrored)
            self.decode_fn = prepared
        cells = getattr(self.latent, "cells", self.latent)  # a prepared grid is channels-last
        self.latent_size = None
        if isinstance(cells, torch.Tensor) and cells.dim() == 4:
            self.latent_size = tuple(cells.shape[1:3] if cells is not self.latent else cells.shape[2:4])

    def _logits_at(self, coords: torch.Tensor) -> torch.Tensor:
        """(B, Q, C) logits (flip-TTA ones with a mirrored latent) at coords (B, Q, 2)."""
        if self.mirrored is None:
            return self.decode_fn(self.latent, coords)
        from ..infer.tta import flip_tta_logits

        return flip_tta_logits(self.decode_fn, self.latent, self.mirrored, coords, self.channels, self.temperature)

    def __call__(self, size: int) -> torch.Tensor:
        b = self.image.shape[0]
        views = 1 if self.mirrored is None else 2
        if self.latent is None:
            self.points = size * size
            return self.model(self.image, size=(size, size))
        if self.mode == "adaptive":
            logits, stats = adaptive_decode(
                self._logits_at,
                (size, size),
                batch=b,
                temperature=self.temperature,
                options=self.adaptive,
                like=self.image,
                latent_size=self.latent_size,
            )
            self.points = views * stats.total / b
            return logits.permute(0, 3, 1, 2)
        from ..models import pixel_centers

        coords = pixel_centers(size, size, device=self.image.device).unsqueeze(0).expand(b, -1, -1)
        self.points = views * size * size
        return self._logits_at(coords).reshape(b, size, size, -1).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------------------ evaluate
def evaluate(
    model: torch.nn.Module,
    loader: Iterable[Mapping[str, Any]],
    label_set: LabelSet,
    sizes: Sequence[int] = (256, 512),
    lowres: Sequence[int] = (64, 96, 128, 192),
    device: str | torch.device = "cpu",
    progress: bool = True,
    *,
    lowres_to: int = DEFAULT_INPUT_SIZE,
    tta: bool = False,
    decode: str = "dense",
    adaptive: AdaptiveOptions | Mapping[str, Any] | None = None,
    compare_dense: bool = False,
    score_as: str | LabelSet | None = None,
    predicted_as: str | LabelSet | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` over ``loader`` at each output size in ``sizes`` and each low-res size.

    ``loader`` yields dicts ``{"image": (B, 3, H, W) float in [0, 1], "masks": {size: (B, size, size)
    int64}, "name": [...]}`` (labels ``IGNORE_INDEX`` = 255 are skipped). A ``sizes`` row decodes at
    that size and compares with the mask of that size; a ``lowres`` row decodes at that size,
    upsamples the logits bilinearly to ``lowres_to`` and compares with the ``lowres_to`` mask.
    Only confusion matrices are kept (memory does not grow with the dataset). The model is moved
    to ``device`` and run in eval mode under ``torch.inference_mode`` (its train/eval mode is
    restored afterwards). Under torch.distributed the matrices are summed over ranks (each rank
    should iterate over its own shard, e.g. ``make_loader(..., distributed=True)``; note that a
    DistributedSampler pads uneven shards with repeated images, which are then counted twice; the
    progress bar shows on rank 0 only).

    Returns a JSON-ready dict: ``rows`` (row name -> ``mean_f1``, ``mean_iou``, ``pixel_acc``,
    ``per_class_f1``, ``per_class_iou``, ``absent_classes``, ``pixels`` and, for label sets with
    merged groups (Helen), ``merged_f1`` / ``merged_iou``), ``images``, ``primary_row`` and, at the
    top level, the numbers of the primary row (the native ``"256"`` row by default; otherwise the
    first row). All scores are percentages; ``None`` marks an undefined score (absent class).
    ``tta``: flip test-time augmentation (models with ``encode``/``decode``; recorded as ``tta``).
    ``decode``: ``"dense"`` (every pixel) or ``"adaptive"`` (coarse to fine, models with ``encode``/``decode``;
    ``adaptive``: its :class:`~fpliif.adaptive.AdaptiveOptions` or a dict of them); recorded as ``decode``,
    with the mean query points decoded per image for each row as ``points_per_image``.
    ``compare_dense`` (with ``decode="adaptive"``): also decode every row densely from the same latent and add
    ``dense_rows`` (the dense scores) and ``agreement_with_dense`` (row -> % of output pixels whose label equals
    the dense label), the accuracy check of adaptive querying.
    ``score_as``: score in another label set (e.g. ``"inner"`` for STN-iCNN): every confusion matrix is remapped
    by :func:`~fpliif.labels.remap_confusion` from ``label_set`` before the scores (recorded as ``label_set``,
    with ``scored_from``).
    ``predicted_as``: the label set the model predicts in, when it is not the data's ``label_set`` (e.g. the
    CelebAMask-HQ model scored on LaPa): each predicted label is mapped to ``label_set`` by
    :data:`~fpliif.labels.REMAPS` before it is counted (recorded as ``predicted_as``). ValueError if there is no
    such mapping.
    """
    pred_set = label_set if predicted_as is None else as_label_set(predicted_as)
    to_data = None
    if pred_set is not label_set:  # ValueError now (not after the whole pass) if there is no mapping
        to_data = torch.from_numpy(pred_set.remap_to(label_set).astype(np.int64))
    score_set = label_set if score_as is None else as_label_set(score_as)
    if score_set is not label_set:
        label_set.remap_to(score_set)  # ValueError now (not after the whole pass) if there is no mapping
    sizes = positive_ints(sizes, "sizes", allow_empty=True)
    lowres = sorted(positive_ints(lowres, "lowres", allow_empty=True), reverse=True)  # the paper's: 192 ... 64
    (lowres_to,) = positive_ints([lowres_to], "lowres_to")
    if not sizes and not lowres:
        raise ValueError("nothing to evaluate: both sizes and lowres are empty")
    num_classes = label_set.num_classes
    model_classes = getattr(model, "num_classes", None)
    if isinstance(model_classes, int) and model_classes != pred_set.num_classes:
        raise ValueError(
            f"the model predicts {model_classes} classes but label set {pred_set.name!r} has {pred_set.num_classes}"
        )
    implicit = is_implicit(model)
    if tta and not implicit:
        raise ValueError(f"tta: needs a model with encode/decode (an implicit decoder), got {type(model).__name__}")
    decode = check_decode_mode(decode)
    adaptive = AdaptiveOptions.of(adaptive)
    if decode == "adaptive" and not implicit:
        raise ValueError(
            f"decode='adaptive': needs a model with encode/decode (an implicit decoder), got {type(model).__name__}"
        )
    if compare_dense and decode != "adaptive":
        raise ValueError("compare_dense: compares adaptive decoding with dense; pass decode='adaptive'")
    device = torch.device(device)
    to_data = None if to_data is None else to_data.to(device)

    # row name -> (decode size, compare size)
    plan: dict[str, tuple[int, int]] = {row_name(s, s): (s, s) for s in sizes}
    for r in lowres:
        plan.setdefault(row_name(r, lowres_to), (r, lowres_to))
    matrices = {name: ConfusionMatrix(num_classes, IGNORE_INDEX, device=device) for name in plan}
    points = dict.fromkeys(plan, 0.0)  # query points decoded, summed over images
    dense_matrices = (  # the same rows decoded densely (compare_dense)
        {name: ConfusionMatrix(num_classes, IGNORE_INDEX, device=device) for name in plan} if compare_dense else {}
    )
    agree = dict.fromkeys(plan, 0)  # pixels labelled as dense decoding labels them (compare_dense)
    compared = dict.fromkeys(plan, 0)

    images = 0
    was_training = model.training
    model.to(device).eval()
    bar = tqdm(loader, desc="eval", unit="batch", file=sys.stderr, disable=not progress or _rank() != 0)
    try:
        with torch.inference_mode():
            for batch in bar:
                image = batch["image"].to(device, non_blocking=True)
                decoder = _Decoder(model, image, pred_set, tta=tta, decode=decode, adaptive=adaptive)
                targets: dict[int, torch.Tensor] = {}
                for name, (out_size, target_size) in plan.items():
                    labels = _row_labels(decoder, out_size, target_size, pred_set, to_data)
                    points[name] += decoder.points * image.shape[0]
                    if target_size not in targets:
                        targets[target_size] = _mask(batch, target_size).to(device, non_blocking=True)
                    matrices[name].update(labels, targets[target_size])
                    if compare_dense:
                        decoder.mode = "dense"
                        dense = _row_labels(decoder, out_size, target_size, pred_set, to_data)
                        decoder.mode = decode
                        dense_matrices[name].update(dense, targets[target_size])
                        agree[name] += int((dense == labels).sum())
                        compared[name] += dense.numel()
                images += int(image.shape[0])
    finally:
        bar.close()
        model.train(was_training)

    for cm in matrices.values():
        cm.all_reduce()
    images = _all_reduce_int(images, device)
    if images == 0:
        raise ValueError("the data loader yielded no images")

    rows = {name: summarize(rescored(cm, label_set, score_set), score_set) for name, cm in matrices.items()}
    native = str(lowres_to)
    primary = native if native in rows and native in {str(s) for s in sizes} else next(iter(rows))
    result = result_of_rows(rows, primary, images, label_set, score_set, pred_set, tta=tta, decode=decode)
    result["points_per_image"] = {name: _all_reduce_float(points[name], device) / images for name in plan}
    if compare_dense:
        for cm in dense_matrices.values():
            cm.all_reduce()
        result["dense_rows"] = {
            name: summarize(rescored(cm, label_set, score_set), score_set) for name, cm in dense_matrices.items()
        }
        result["agreement_with_dense"] = {
            name: 100.0 * _all_reduce_int(agree[name], device) / max(1, _all_reduce_int(compared[name], device))
            for name in plan
        }
    return result


def result_of_rows(
    rows: dict[str, dict[str, Any]],
    primary: str,
    images: int,
    label_set: LabelSet,
    score_set: LabelSet,
    pred_set: LabelSet,
    **settings: Any,
) -> dict[str, Any]:
    """The JSON-ready result of an evaluation from its scored ``rows``: the ``primary`` row's numbers at the top
    level, then ``images``, the label sets, ``settings`` (e.g. ``tta``, ``decode``), the exclusion and absence
    rules, and ``rows``."""
    top = rows[primary]
    result: dict[str, Any] = {k: top[k] for k in ("mean_f1", "mean_iou", "pixel_acc", "per_class_f1", "per_class_iou")}
    if "merged_f1" in top:
        result["merged_f1"] = top["merged_f1"]
        result["merged_iou"] = top["merged_iou"]
    result.update(
        {
            "absent_classes": top["absent_classes"],
            "images": images,
            "primary_row": primary,
            "label_set": score_set.name,
            **({"scored_from": label_set.name} if score_set is not label_set else {}),
            **({"predicted_as": pred_set.name} if pred_set is not label_set else {}),
            **settings,
            "excluded_classes": [score_set.classes[i] for i in excluded_classes(score_set)],
            "absent_rule": ABSENT_RULE,
            "rows": rows,
        }
    )
    return result


def rescored(cm: ConfusionMatrix, source: LabelSet, target: LabelSet) -> ConfusionMatrix:
    """``cm`` in ``target``'s classes (:func:`~fpliif.labels.remap_confusion`); ``cm`` itself if they are one."""
    if target is source:
        return cm
    out = ConfusionMatrix(target.num_classes, cm.ignore_index)
    out.matrix += torch.from_numpy(remap_confusion(cm.matrix.cpu().numpy(), source, target)).to(out.matrix)
    return out


def _row_labels(
    decoder: _Decoder, out_size: int, target_size: int, pred_set: LabelSet, to_data: torch.Tensor | None
) -> torch.Tensor:
    """(B, t, t) labels of one row: decode at ``out_size``, upsample the logits to ``target_size`` if needed;
    mapped by the lookup table ``to_data`` when the model predicts in another label set than the data's."""
    logits = decoder(out_size)
    if logits.shape[1] != pred_set.num_classes:
        raise ValueError(
            f"the model returned {logits.shape[1]} class logits; label set {pred_set.name!r} has "
            f"{pred_set.num_classes} classes"
        )
    if out_size != target_size:
        logits = F.interpolate(logits.float(), size=(target_size, target_size), mode="bilinear", align_corners=False)
    labels = logits.argmax(dim=1)
    return labels if to_data is None else to_data[labels]


# ------------------------------------------------------------------------------------------------ baseline
def trivial_baseline(
    loader: Iterable[Mapping[str, Any]],
    label_set: LabelSet,
    size: int = DEFAULT_INPUT_SIZE,
    device: str | torch.device = "cpu",
    progress: bool = False,
    score_as: str | LabelSet | None = None,
) -> dict[str, Any]:
    """Metrics of predicting the dataset's most frequent ground-truth class for every pixel.

    Class frequencies are counted over the ``size`` masks of the whole loader (ignored pixels
    skipped; ties go to the lower class index); the confusion matrix of the constant prediction
    follows from them directly, so one pass suffices. Returns the same per-row fields as
    :func:`evaluate` plus ``predicted_class``, ``class_pixels`` (name -> count) and ``images``; ``score_as``: the
    scores in another label set, as in :func:`evaluate` (the class and the counts stay in ``label_set``'s).
    """
    score_set = label_set if score_as is None else as_label_set(score_as)
    (size,) = positive_ints([size], "size")
    device = torch.device(device)
    counts = ConfusionMatrix(label_set.num_classes, IGNORE_INDEX, device=device)
    images = 0
    bar = tqdm(loader, desc="baseline", unit="batch", file=sys.stderr, disable=not progress or _rank() != 0)
    for batch in bar:
        target = _mask(batch, size).to(device)
        counts.update(target, target)  # diagonal = per-class pixel counts (and validates the labels)
        images += int(target.shape[0])
    counts.all_reduce()
    images = _all_reduce_int(images, device)
    if images == 0:
        raise ValueError("the data loader yielded no images")
    freq = torch.diagonal(counts.matrix).to("cpu")
    k = int(torch.argmax(freq))  # first maximum on ties
    cm = ConfusionMatrix(label_set.num_classes, IGNORE_INDEX)
    cm.matrix[:, k] = freq
    row = summarize(rescored(cm, label_set, score_set), score_set)
    row.update(
        {
            "predicted_class": label_set.classes[k],
            "class_pixels": dict(zip(label_set.classes, (int(v) for v in freq), strict=True)),
            "images": images,
            "size": size,
        }
    )
    return row


# ------------------------------------------------------------------------------------------------ table
def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(result: Mapping[str, Any], label_set: LabelSet) -> str:
    """The paper's table layout (Markdown): one row per setting, F1 per class (background skipped)
    with 1 decimal, then Mean (mean F1) and mIoU with 2 decimals, then merged-class F1 (Helen).

    ``result`` is :func:`evaluate`'s output (or a single row such as :func:`trivial_baseline`'s).
    ``-`` marks an undefined score (class absent from both ground truth and prediction).
    """
    rows: Mapping[str, Mapping[str, Any]] = result["rows"] if "rows" in result else {"result": result}
    skip = set(excluded_classes(label_set))
    classes = [c for i, c in enumerate(label_set.classes) if i not in skip]
    groups = list(label_set.merged_f1)
    group_heads = [f"{g} (merged)" if g in label_set.classes else g for g in groups]  # Helen's mouth group
    header = ["Setting", *classes, "Mean", "mIoU", *group_heads]
    body = []
    for name, row in rows.items():
        per_class = row["per_class_f1"]
        merged = row.get("merged_f1") or {}
        body.append(
            [
                name,
                *(_fmt(per_class.get(c), 1) for c in classes),
                _fmt(row["mean_f1"], 2),
                _fmt(row["mean_iou"], 2),
                *(_fmt(merged.get(g), 1) for g in groups),
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    lines = [line(header), sep, *(line(r) for r in body)]
    lines.append("")
    excluded = ", ".join(label_set.classes[i] for i in sorted(skip)) or "none"
    lines.append(f"F1 (%) per class; Mean = mean F1, mIoU = mean IoU over the classes (excluded: {excluded}).")
    if groups:
        lines.append(
            "Merged classes (F1 over the union of the members): "
            + "; ".join(f"{g} = {'+'.join(label_set.merged_f1[g])}" for g in groups)
            + "."
        )
    lines.append(f"'-' = undefined: {ABSENT_RULE}.")
    for name, row in rows.items():
        if row.get("absent_classes"):
            lines.append(f"absent classes ({name}): {', '.join(row['absent_classes'])}")
    if "images" in result:
        lines.append(f"images: {result['images']}")
    return "\n".join(lines)
