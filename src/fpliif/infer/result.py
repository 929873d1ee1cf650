"""Parsing results: per-image label maps, faces, class shares, overlays and palette PNGs. No torch here."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import LabelSet, get_label_set, index_png


@dataclass
class Face:
    """One parsed face.

    Attributes:
        box: detected (or given) face box [x1, y1, x2, y2] in original image pixels.
        score: detector score (1.0 for boxes given by the caller).
        crop: the square crop window [x0, y0, x0 + side, y0 + side] fed to the model (may extend outside
            the image; see :mod:`fpliif.infer.framing`), rotated by ``angle`` about its centre.
        region: the pixels the (rotated) ``crop`` covers inside the image, or ``context`` where there is one
            (and the labels continued past it, ``FaceParser(extend=True)``): its bounding box, [x0, y0, x1, y1]
            (ints, end-exclusive).
        labels: this face's own label map over ``region`` at original resolution (uint8, before merging
            with overlapping faces), i.e. ``result.labels[y0:y1, x0:x1]`` where this face won (0 outside a
            rotated crop).
        landmarks: the detector's 5 landmarks [[x, y], ...] (:data:`fpliif.infer.detect.LANDMARKS`), or None.
        angle: the crop's roll in degrees (eyes levelled; 0 without landmarks or with ``align=False``).
        context: the wider window [x0, y0, x1, y1] (same centre and roll) whose labels extend the face's
            outer classes beyond ``crop``, or None (``context=False``).
    """

    box: list[float]
    score: float
    crop: list[int]
    region: list[int]
    labels: np.ndarray
    classes: tuple[str, ...] = ()
    landmarks: list[list[float]] | None = None
    angle: float = 0.0
    context: list[int] | None = None

    def class_share(self) -> dict[str, float]:
        """Fraction of this face's region per class name."""
        return class_share(self.labels, self.classes)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "crop": [int(v) for v in self.crop],
        }
        if self.landmarks is not None:
            d["landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]
        if self.angle:
            d["angle"] = round(float(self.angle), 2)
        if self.context is not None:
            d["context"] = [int(v) for v in self.context]
        d["class_share"] = _rounded(self.class_share())
        return d


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

    def mask(self, *names: str | Iterable[str]) -> np.ndarray:
        """(H, W) bool mask of the named classes (their union), at the result's resolution.

        ``result.mask("hair")``, ``result.mask("hair", "skin")`` or ``result.mask(["hair", "skin"])``; names are
        those of :attr:`classes` (after :meth:`remap`, the new set's). Unknown names raise ValueError naming
        the closest class.
        """
        flat = [n for arg in names for n in ([arg] if isinstance(arg, str) else _names(arg))]
        lut = np.zeros(256, dtype=bool)
        lut[self.label_set.indices(flat)] = True
        return lut[self.labels]

    def remap(self, label_set: str | LabelSet) -> ParseResult:
        """This result in another label set: ``result.remap("lapa")`` or ``result.remap("coarse")``.

        A new :class:`ParseResult` whose labels (and each face's), classes, palette, ``class_share`` and
        overlays follow the set; ``probs`` are summed over the merged classes, and ``confidence`` is their max
        (without ``probs`` it stays that of the original class: a lower bound). Labels are the remapped
        labels, not a new argmax of the summed probabilities. The mappings are in :mod:`fpliif.labels`
        (``REMAPS``); unknown sets, or sets this result's cannot be mapped to, raise ValueError.
        """
        target = label_set if isinstance(label_set, LabelSet) else get_label_set(label_set)
        lut = self.label_set.remap_to(target)
        probs, confidence = self.probs, self.confidence
        if probs is not None:
            merged = np.zeros((target.num_classes, *probs.shape[1:]), dtype=probs.dtype)
            for i in range(min(len(probs), self.label_set.num_classes)):
                merged[lut[i]] += probs[i]
            probs, confidence = merged, merged.max(axis=0)
        faces = [replace(f, labels=lut[f.labels], classes=target.classes) for f in self.faces]
        return replace(
            self,
            labels=lut[self.labels],
            faces=faces,
            classes=target.classes,
            label_set=target,
            probs=probs,
            confidence=confidence,
        )

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
        """JSON-ready summary: image, size [W, H], label_set and classes (the label values' names), faces (box,
        score, crop, class_share), class_share."""
        return {
            "image": self.source,
            "size": list(self.size),
            "label_set": self.label_set.name,
            "classes": list(self.classes),
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


COUNT_PIXELS = 1 << 20
"""Label maps are counted in strips of about this many pixels (``np.bincount`` widens its input to 8 bytes a
pixel: counting a whole 40 MP map at once took 300 MB more than the map itself)."""


def class_share(labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, float]:
    """Fraction of ``labels``' pixels per class name, counted strip by strip (bounded extra memory)."""
    n = max(len(classes), int(labels.max(initial=0)) + 1)
    rows = np.atleast_2d(labels)
    step = max(1, COUNT_PIXELS * rows.shape[0] // max(1, rows.size))  # rows per strip
    counts = np.zeros(n, np.int64)
    for r in range(0, rows.shape[0], step):
        counts += np.bincount(rows[r : r + step].ravel(), minlength=n)
    total = max(1, labels.size)
    return {name: float(counts[i]) / total for i, name in enumerate(classes)}


def save_index_png(labels: np.ndarray, path: str | Path, label_set: LabelSet) -> Path:
    """Write ``labels`` to ``path`` as :func:`fpliif.labels.index_png` (smallest file: ``optimize``)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: an index PNG is written; give the file a .png name")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(index_png(labels, label_set, optimize=True))
    return path


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def blend_labels(
    base: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float, strip_pixels: int = 1 << 18
) -> np.ndarray:
    """(H, W, 3) uint8: ``base`` (uint8) with ``palette[label]`` blended in at ``alpha`` where the label is not 0.

    Works in row strips of about ``strip_pixels`` on the foreground pixels only, so the peak memory is the
    uint8 output plus one strip's temporaries (not several full-size float copies of the image).
    """
    h, w = labels.shape
    out = np.array(base, dtype=np.uint8, copy=True)
    colors = np.asarray(palette).astype(np.float32)
    step = max(1, int(strip_pixels) // max(w, 1))
    for r0 in range(0, h, step):
        lab = labels[r0 : r0 + step]
        fg = lab != 0
        if fg.any():
            part = out[r0 : r0 + step]
            part[fg] = (part[fg] * (1 - alpha) + colors[lab[fg]] * alpha).round().astype(np.uint8)
    return out


def render_overlay(
    image: np.ndarray | None,
    labels: np.ndarray,
    label_set: LabelSet,
    alpha: float = 0.5,
    legend: bool = False,
    boxes: Any = (),
    strip_pixels: int = 1 << 18,
) -> Any:
    """Blend label colours over ``image`` (black canvas if None); optional legend panel and face boxes.

    Built in row strips of about ``strip_pixels`` straight into the one output image, so the peak memory is that
    image plus one strip's temporaries: no full-size copy of the input (in numpy or in Pillow) on the way.
    """
    from PIL import Image, ImageDraw

    from .images import to_uint8

    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    h, w = labels.shape
    if image is not None and image.shape[:2] != (h, w):
        raise ValueError(f"overlay: image size {image.shape[:2]} does not match the labels {labels.shape}")
    panel = _legend_panel(labels, label_set, h) if legend else None
    out = Image.new("RGB", (w + (panel.width if panel is not None else 0), h))
    colors = label_set.color_array()
    step = max(1, int(strip_pixels) // max(w, 1))
    for r0 in range(0, h, step):
        lab = labels[r0 : r0 + step]
        base = np.zeros((*lab.shape, 3), np.uint8) if image is None else to_uint8(image[r0 : r0 + step])
        out.paste(Image.fromarray(blend_labels(base, lab, colors, alpha, strip_pixels)), (0, r0))
    draw = ImageDraw.Draw(out)
    lw = max(1, round(min(h, w) / 300))
    for x1, y1, x2, y2 in boxes:
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=(255, 255, 255), width=lw)
    if panel is not None:
        out.paste(panel, (w, 0))  # also covers any box outline drawn past the image's right edge
    return out


def _legend_panel(labels: np.ndarray, label_set: LabelSet, h: int) -> Any:
    """The legend: an h pixels high PIL image with a colour swatch and the name of each class present."""
    from PIL import Image, ImageDraw

    shares = class_share(labels, label_set.classes).values()
    present = [i for i, share in enumerate(shares) if i != 0 and share > 0]
    row = int(np.clip(h / (max(len(present), 1) + 2), 12, 28))
    font = _font(max(9, int(row * 0.7)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    names = [int(measure.textlength(label_set.classes[i], font=font)) for i in present]
    panel = Image.new("RGB", (row * 2 + max(names or [60]) + row, h), (32, 32, 32))
    pd = ImageDraw.Draw(panel)
    if not present:
        pd.text((row // 2, row // 2), "no face", fill=(255, 255, 255), font=font)
    for k, i in enumerate(present):
        y = row // 2 + k * row
        pd.rectangle(
            [row // 2, y + 2, row // 2 + row - 5, y + row - 3], fill=tuple(label_set.colors[i]), outline=(255, 255, 255)
        )
        pd.text((row * 2 - row // 3, y + row // 8), label_set.classes[i], fill=(255, 255, 255), font=font)
    return panel


def _names(arg: Any) -> list[Any]:
    """The class names in one argument of :meth:`ParseResult.mask` that is not a string; ValueError if it is no
    iterable of them."""
    if isinstance(arg, Iterable) and not isinstance(arg, (bytes, dict)):
        return list(arg)
    raise ValueError(f"mask: expected class names (strings or a list of them), got {arg!r}")
