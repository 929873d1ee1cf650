"""Scoring the photo path: each dataset image parsed as a photo, as users run the parser.

:func:`evaluate_photos` hands every image, at its own size, to a :class:`~fpliif.infer.parser.FaceParser`
(detect the faces, align, crop, parse, paste back at the image's own pixels) and scores the labels against the
ground truth at that size: one row, ``"photo"``. Unlike :func:`~fpliif.eval.evaluate.evaluate` (the paper's
protocol: image and mask squashed to squares, the image taken as the model's crop), nothing is resized and the
framing is the parser's own, so it measures what a user gets on, e.g., LaPa's in-the-wild photos. An image in which
no face is found counts with all-background labels and is listed under ``no_face``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..labels import IGNORE_INDEX, LabelSet, as_label_set
from .evaluate import rescored, result_of_rows, summarize
from .metrics import ConfusionMatrix

ROW = "photo"


def evaluate_photos(
    parser: Any,
    samples: Iterable[Mapping[str, Any]],
    label_set: LabelSet,
    *,
    score_as: str | LabelSet | None = None,
    predicted_as: str | LabelSet | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``parser`` on ``samples``: dicts ``{"image": (3, H, W) float in [0, 1], "mask": (H, W) int, "name":
    str}`` (a :class:`~fpliif.data.FaceParsingDataset` without a transform), each parsed as a photo.

    ``label_set``: the masks' classes. ``predicted_as``: the parser's label set when it is not ``label_set`` (its
    labels are mapped by :data:`~fpliif.labels.REMAPS`); ``score_as``: score in another set, as in
    :func:`~fpliif.eval.evaluate.evaluate`. Returns the same JSON-ready structure as ``evaluate`` with the one
    row ``"photo"``, plus ``faces`` (found in all images) and ``no_face`` (names of the images without one).
    """
    pred_set = label_set if predicted_as is None else as_label_set(predicted_as)
    score_set = label_set if score_as is None else as_label_set(score_as)
    to_data = None if pred_set is label_set else pred_set.remap_to(label_set)  # ValueError: no mapping
    if score_set is not label_set:
        label_set.remap_to(score_set)
    if len(parser.classes) != pred_set.num_classes:  # equal counts: scored by index, as evaluate() does
        raise ValueError(
            f"the parser predicts {len(parser.classes)} classes ({parser.label_set.name}) but label set "
            f"{pred_set.name!r} has {pred_set.num_classes}"
        )
    cm = ConfusionMatrix(label_set.num_classes, IGNORE_INDEX)
    images, faces, no_face = 0, 0, []
    for item in tqdm(samples, desc="eval photos", unit="image", file=sys.stderr, disable=not progress):
        result = parser(_as_photo(item["image"]))
        labels = np.asarray(result.labels)
        if to_data is not None:
            labels = to_data[labels]
        cm.update(torch.from_numpy(labels.astype(np.int64)), torch.as_tensor(item["mask"]).long())
        images += 1
        faces += len(result.faces)
        if not result.faces:
            no_face.append(str(item["name"]))
    if images == 0:
        raise ValueError("no images to evaluate")
    rows = {ROW: summarize(rescored(cm, label_set, score_set), score_set)}
    settings = {"path": "photo", "tta": bool(parser.tta), "decode": parser.decode}
    result = result_of_rows(rows, ROW, images, label_set, score_set, pred_set, **settings)
    result.update({"faces": faces, "no_face": no_face})
    return result


def _as_photo(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a (3, H, W) float image in [0, 1] (decoded from 8-bit files: exact)."""
    array = torch.as_tensor(image).detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return np.ascontiguousarray(array.permute(1, 2, 0).numpy())
