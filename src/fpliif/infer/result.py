"""Parsing results: per-image label maps, faces, class shares, overlays and palette PNGs. No torch here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import LabelSet


@dataclass
class Face:
    """One parsed face.

    Attributes:
        box: detected (or given) face box [x1, y1, x2, y2] in original image pixels.
        score: detector score (1.0 for boxes given by the caller).
        crop: the square crop window [x0, y0, x0 + side, y0 + side] fed to the model (may extend outside
            the image; see :mod:`fpliif.infer.framing`).
        region: the part of ``crop`` inside the image, [x0, y0, x1, y1] (ints, end-exclusive).
        labels: this face's own label map over ``region`` at original resolution (uint8, before merging
            with overlapping faces), i.e. ``result.labels[y0:y1, x0:x1]`` where this face won.
    """

    box: list[float]
    score: float
    crop: list[int]
    region: list[int]
    labels: np.ndarray
    classes: tuple[str, ...] = ()

    def class_share(self) -> dict[str, float]:
        """Fraction of this face's region per class name."""
        return class_share(self.labels, self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "crop": [int(v) for v in self.crop],
            "class_share": _rounded(self.class_share()),
        }


@dataclass
class ParseResult:
    """Parsing of one image.

    Attributes:
        labels: (H, W) uint8 label map at the original resolution; 0 (background) wherever no face was parsed.
        faces: the parsed faces (empty if none was found).
        classes: class names, index = label value.
        label_set: names and colours (palette) of the classes.
        image: the input image as an (H, W, 3) RGB array (uint8 or float in [0, 1]), for overlays.
        probs: (C, H, W) float32 class probabilities (softmax with the model's temperature) if requested;
            outside every face crop they are one-hot background.
        confidence: (H, W) float32 max probability if requested (1.0 outside every face crop).
        message: why the result is empty (e.g. no face detected), else None.
        source: the file the image came from, if any.
    """

    labels: np.ndarray
    faces: list[Face]
    classes: tuple[str, ...]
    label_set: LabelSet
    image: np.ndarray | None = field(default=None, repr=False)
    probs: np.ndarray | None = field(default=None, repr=False)
    confidence: np.ndarray | None = field(default=None, repr=False)
    message: str | None = None
    source: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image."""
        return int(self.labels.shape[1]), int(self.labels.shape[0])

    def class_share(self) -> dict[str, float]:
        """Fraction of the image's pixels per class name (all classes; sums to 1)."""
        return class_share(self.labels, self.classes)

    def color_labels(self) -> np.ndarray:
        """(H, W, 3) uint8 colour image of the label map (the label set's palette)."""
        return self.label_set.color_array()[self.labels]

    def overlay(self, alpha: float = 0.5, legend: bool = False, boxes: bool = True) -> Any:
        """PIL image: the input with the label colours blended in (background left untouched).

        ``legend`` appends a panel on the right with colour swatches and names of the classes present;
        ``boxes`` outlines each face box.
        """
        return render_overlay(
            self.image,
            self.labels,
            self.label_set,
            alpha=alpha,
            legend=legend,
            boxes=[f.box for f in self.faces] if boxes else (),
        )

    def save_png(self, path: str | Path) -> Path:
        """Write the label map as an 8-bit index PNG with the class palette embedded."""
        return save_index_png(self.labels, path, self.label_set)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: image, size [W, H], faces (box, score, crop, class_share), class_share."""
        return {
            "image": self.source,
            "size": list(self.size),
            "faces": [f.to_dict() for f in self.faces],
            "class_share": _rounded(self.class_share()),
            **({"message": self.message} if self.message else {}),
        }

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in d.items()}


def class_share(labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, float]:
    counts = np.bincount(labels.ravel(), minlength=max(len(classes), int(labels.max(initial=0)) + 1))
    total = max(1, labels.size)
    return {name: float(counts[i]) / total for i, name in enumerate(classes)}


def save_index_png(labels: np.ndarray, path: str | Path, label_set: LabelSet) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    img.putpalette(label_set.palette())
    img.save(path, optimize=True)
    return path


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def render_overlay(
    image: np.ndarray | None,
    labels: np.ndarray,
    label_set: LabelSet,
    alpha: float = 0.5,
    legend: bool = False,
    boxes: Any = (),
) -> Any:
    """Blend label colours over ``image`` (black canvas if None); optional legend panel and face boxes."""
    from PIL import Image, ImageDraw

    from .images import to_uint8

    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    h, w = labels.shape
    base = np.zeros((h, w, 3), np.uint8) if image is None else to_uint8(image)
    if base.shape[:2] != (h, w):
        raise ValueError(f"overlay: image size {base.shape[:2]} does not match the labels {labels.shape}")
    colors = label_set.color_array()[labels].astype(np.float32)
    fg = (labels != 0)[..., None]
    out = np.where(fg, base * (1 - alpha) + colors * alpha, base).round().astype(np.uint8)
    img = Image.fromarray(out)
    draw = ImageDraw.Draw(img)
    lw = max(1, round(min(h, w) / 300))
    for x1, y1, x2, y2 in boxes:
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=(255, 255, 255), width=lw)
    if not legend:
        return img
    present = [i for i in np.unique(labels).tolist() if i != 0 and i < label_set.num_classes]
    row = int(np.clip(h / (max(len(present), 1) + 2), 12, 28))
    font = _font(max(9, int(row * 0.7)))
    width = (
        row * 2 + max([int(draw.textlength(label_set.classes[i], font=font)) for i in present] or [60]) + row
    )
    panel = Image.new("RGB", (w + width, h), (32, 32, 32))
    panel.paste(img, (0, 0))
    pd = ImageDraw.Draw(panel)
    if not present:
        pd.text((w + row // 2, row // 2), "no face", fill=(255, 255, 255), font=font)
    for k, i in enumerate(present):
        y = row // 2 + k * row
        pd.rectangle(
            [w + row // 2, y + 2, w + row // 2 + row - 5, y + row - 3],
            fill=tuple(label_set.colors[i]),
            outline=(255, 255, 255),
        )
        pd.text((w + row * 2 - row // 3, y + row // 8), label_set.classes[i], fill=(255, 255, 255), font=font)
    return panel
