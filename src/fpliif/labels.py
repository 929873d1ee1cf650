"""Label sets: class names, colours and left/right pairs of every dataset, in one place.

Every other module (datasets, flips, metrics, overlays, the web page) reads these tables;
nothing else spells out a class order.

Left/right conventions differ between datasets:

* CelebAMask-HQ: ``l_``/``r_`` are the *subject's* left/right (``l_eye`` lies on the image's right half).
* LaPa and Helen: left/right are the *image* sides (``l_eye`` lies on the image's left half).

Both conventions are mirror-symmetric, so a horizontal flip swaps each pair in either case;
mixing datasets, however, needs the pairs swapped (see :func:`LabelSet.remap_to`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = 255
"""Label value for pixels without ground truth (e.g. brought in from outside the image by a warp)."""


@dataclass(frozen=True)
class LabelSet:
    """Class names, RGB palette and horizontally mirrored class pairs of one dataset."""

    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    side: str  # "subject" or "image": whose left/right the l_/r_ classes name
    merged_f1: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.classes) != len(self.colors):
            raise ValueError(f"label set {self.name!r}: {len(self.classes)} classes but {len(self.colors)} colours")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def palette(self) -> list[int]:
        """A flat 768-entry palette for PIL 'P' images (unused entries black, ignore index white)."""
        flat = [c for rgb in self.colors for c in rgb]
        flat += [0] * (768 - len(flat))
        flat[3 * IGNORE_INDEX : 3 * IGNORE_INDEX + 3] = [255, 255, 255]
        return flat

    def color_array(self) -> np.ndarray:
        """(256, 3) uint8 colour lookup table indexed by label value."""
        return np.asarray(self.palette(), dtype=np.uint8).reshape(256, 3)

    def flip_lut(self) -> np.ndarray:
        """(256,) lookup table mapping each label to its mirror-image label (identity elsewhere)."""
        lut = np.arange(256, dtype=np.uint8)
        for a, b in self.flip_pairs:
            lut[a], lut[b] = b, a
        return lut

    def index(self, name: str) -> int:
        try:
            return self.classes.index(name)
        except ValueError:
            raise KeyError(f"label set {self.name!r} has no class {name!r}; classes: {list(self.classes)}") from None


CELEBAMASK_HQ = LabelSet(
    name="celebamask-hq",
    classes=(
        "background",
        "skin",
        "nose",
        "eye_g",
        "l_eye",
        "r_eye",
        "l_brow",
        "r_brow",
        "l_ear",
        "r_ear",
        "mouth",
        "u_lip",
        "l_lip",
        "hair",
        "hat",
        "ear_r",
        "neck_l",
        "neck",
        "cloth",
    ),
    colors=(
        (0, 0, 0),
        (204, 0, 0),
        (76, 153, 0),
        (204, 204, 0),
        (51, 51, 255),
        (204, 0, 204),
        (0, 255, 255),
        (255, 204, 204),
        (102, 51, 0),
        (255, 0, 0),
        (102, 204, 0),
        (255, 255, 0),
        (0, 0, 153),
        (0, 0, 204),
        (255, 51, 153),
        (0, 204, 204),
        (0, 51, 0),
        (255, 153, 51),
        (0, 204, 0),
    ),
    flip_pairs=((4, 5), (6, 7), (8, 9)),
    side="subject",
)

_ELEVEN_CLASSES = (
    "background",
    "skin",
    "l_brow",
    "r_brow",
    "l_eye",
    "r_eye",
    "nose",
    "u_lip",
    "mouth",
    "l_lip",
    "hair",
)
_ELEVEN_COLORS = (
    (0, 0, 0),
    (204, 0, 0),
    (0, 255, 255),
    (255, 204, 204),
    (51, 51, 255),
    (204, 0, 204),
    (76, 153, 0),
    (255, 255, 0),
    (102, 204, 0),
    (0, 0, 153),
    (0, 0, 204),
)

LAPA = LabelSet(
    name="lapa",
    classes=_ELEVEN_CLASSES,
    colors=_ELEVEN_COLORS,
    flip_pairs=((2, 3), (4, 5)),
    side="image",
)

HELEN = LabelSet(
    name="helen",
    classes=_ELEVEN_CLASSES,
    colors=_ELEVEN_COLORS,
    flip_pairs=((2, 3), (4, 5)),
    side="image",
    # Table 3 of the paper reports these merged classes (F1 over the union of the members).
    merged_f1={
        "eyes": ("l_eye", "r_eye"),
        "brows": ("l_brow", "r_brow"),
        "mouth": ("u_lip", "mouth", "l_lip"),
        "overall": ("l_brow", "r_brow", "l_eye", "r_eye", "nose", "u_lip", "mouth", "l_lip"),
    },
)

LABEL_SETS: dict[str, LabelSet] = {s.name: s for s in (CELEBAMASK_HQ, LAPA, HELEN)}


def get_label_set(name: str) -> LabelSet:
    """Look up a label set by name (``celebamask-hq``, ``lapa``, ``helen``)."""
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise KeyError(f"unknown label set {name!r}; known: {sorted(LABEL_SETS)}") from None


def generic_label_set(classes: list[str] | tuple[str, ...], name: str = "custom") -> LabelSet:
    """A label set for a user-supplied class list: known names keep their colours, l_/r_ names pair up."""
    known = {c: rgb for s in LABEL_SETS.values() for c, rgb in zip(s.classes, s.colors, strict=True)}
    rng = np.random.default_rng(0)
    colors = tuple(known.get(c, tuple(int(v) for v in rng.integers(32, 256, 3))) for c in classes)
    pairs = []
    for i, c in enumerate(classes):
        if c.startswith("l_") and ("r_" + c[2:]) in classes:
            pairs.append((i, list(classes).index("r_" + c[2:])))
    return LabelSet(name=name, classes=tuple(classes), colors=colors, flip_pairs=tuple(pairs), side="subject")
