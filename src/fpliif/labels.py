"""Label sets: class names, colours and left/right pairs of every dataset, in one place.

Every other module (datasets, flips, metrics, overlays, the web page) reads these tables;
nothing else spells out a class order.

Left/right conventions differ between datasets:

* CelebAMask-HQ: ``l_``/``r_`` are the *subject's* left/right (``l_eye`` lies on the image's right half).
* LaPa and Helen: left/right are the *image* sides (``l_eye`` lies on the image's left half).

Both conventions are mirror-symmetric, so a horizontal flip swaps each pair in either case;
mixing datasets, however, needs the pairs swapped (see :meth:`LabelSet.remap_to`).

Output label sets. A label map can be merged into a coarser set with :func:`remap_labels` (or
``ParseResult.remap``); the mappings are the lookup tables in :data:`REMAPS`:

* ``celebamask-hq`` -> ``lapa`` (:data:`CELEBAMASK_TO_LAPA`, LaPa's 11 classes). Eyes and brows move to
  the LaPa class on the same *image* side (CelebAMask ``l_eye`` -> LaPa ``r_eye``). CelebAMask classes
  without a LaPa counterpart: ears -> ``skin`` and earrings (``ear_r``) -> ``skin`` (they sit on the ear);
  eyeglasses (``eye_g``) -> ``skin`` (in CelebAMask the eyes and brows are drawn over the glasses, so the
  ``eye_g`` pixels left are frames and lenses over the face); ``neck``, necklace (``neck_l``), ``cloth``
  and ``hat`` -> ``background`` (LaPa's ``skin`` is the face; a hat is not ``hair``).
  ``celebamask-hq`` -> ``helen`` is the same table (Helen has LaPa's classes, named by the image's sides).
* ``celebamask-hq`` -> ``coarse`` (:data:`CELEBAMASK_TO_COARSE`, :data:`COARSE`: background, skin, hair,
  eyes, nose, mouth): skin includes ears, neck, eyeglasses, earrings and necklace; hair includes the
  brows; eyes both eyes; mouth the lips and the inner mouth; hat and cloth are background.
* ``lapa`` / ``helen`` -> ``coarse`` (:data:`ELEVEN_TO_COARSE`): brows -> hair, lips and mouth -> mouth.
* ``celebamask-hq`` -> ``inner`` (:data:`CELEBAMASK_TO_INNER`, :data:`INNER`: background and the eight inner
  face parts that STN-iCNN labels, Helen's classes without skin and hair, with CelebAMask-HQ's names and sides):
  the inner classes keep their class, every other class (skin, hair, ears, neck, cloth, accessories) becomes
  background. A confusion matrix remaps the same way (:func:`remap_confusion`).

The accessories (``eye_g``, ``hat``, ``ear_r``, ``neck_l``) and ``cloth`` stay available by name in the
CelebAMask-HQ set itself. Chaining remaps loses what the first one merged: ``celebamask-hq`` -> ``lapa`` ->
``coarse`` has no neck in ``skin``; remap from the model's own set instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = 255
"""Label value for pixels without ground truth (e.g. brought in from outside the image by a warp)."""

BACKGROUND_INDEX = 0
"""The background is class 0 of every label set, whatever its name (the first line of a ``classes.txt``); the
built-in sets name it ``background``. Left out of the mean scores (:func:`fpliif.eval.evaluate.excluded_classes`)."""


class UnknownNameError(KeyError, ValueError):
    """An unknown label-set or class name. A ``ValueError`` (and, for older callers, a ``KeyError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _unknown(head: str, name: object, known: Iterable[str], listing: str = "known") -> UnknownNameError:
    """``<head> (did you mean 'hair'?); <listing>: a, b, ...`` (the closest known name by difflib)."""
    known = list(known)
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UnknownNameError(f"{head}{hint}; {listing}: {', '.join(known)}")


@dataclass(frozen=True)
class LabelSet:
    """Class names, RGB palette and horizontally mirrored class pairs of one dataset."""

    name: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    side: str  # "subject" or "image": whose left/right the l_/r_ classes name ("none": no such classes)
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
        """Index of a class name; :class:`UnknownNameError` (a ValueError and KeyError) naming the closest."""
        try:
            return self.classes.index(name)
        except ValueError:
            raise _unknown(
                f"unknown class {name!r} in label set {self.name!r}", name, self.classes, "classes"
            ) from None

    def indices(self, names: str | Iterable[str]) -> list[int]:
        """Indices of class names (one name or several, in the given order); unknown names as in :meth:`index`."""
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise ValueError(f"no class name given; classes of label set {self.name!r}: {', '.join(self.classes)}")
        return [self.index(n) for n in names]

    def remap_to(self, target: str | LabelSet) -> np.ndarray:
        """(256,) uint8 lookup table from this set's labels to ``target``'s (see :data:`REMAPS`).

        The identity for the same set; the ignore index stays; values that are no class map to the ignore
        index. Unknown target names or pairs without a mapping raise :class:`UnknownNameError`.
        """
        target = as_label_set(target)
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        if target.classes == self.classes:
            lut[: self.num_classes] = np.arange(self.num_classes)
            return lut
        builtin = LABEL_SETS.get(self.name) == self
        table = REMAPS.get((self.name, target.name)) if builtin else None
        if table is None and not builtin:
            raise UnknownNameError(
                f"no mapping from label set {self.name!r} to {target.name!r}: a custom class list "
                f"({', '.join(self.classes[:8])}{', ...' if self.num_classes > 8 else ''}) has no remappings; "
                f"they exist only between built-in label sets ({remap_listing()}); ask for no remapping to "
                "keep the model's own classes"
            )
        if table is None:
            raise _unknown(
                f"no mapping from label set {self.name!r} to {target.name!r}",
                target.name,
                remap_targets(self),
                f"{self.name!r} maps to",
            )
        for name, to in table.items():
            lut[self.index(name)] = target.index(to)
        return lut


class HasLabelSet:
    """``classes`` and ``num_classes`` of anything that has a ``label_set`` (the PyTorch and ONNX models)."""

    label_set: LabelSet

    @property
    def classes(self) -> tuple[str, ...]:
        return self.label_set.classes

    @property
    def num_classes(self) -> int:
        return self.label_set.num_classes


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

HELEN_GROUPS: dict[str, tuple[str, ...]] = {
    "eyes": ("l_eye", "r_eye"),
    "brows": ("l_brow", "r_brow"),
    "mouth": ("u_lip", "mouth", "l_lip"),
    "overall": ("l_brow", "r_brow", "l_eye", "r_eye", "nose", "u_lip", "mouth", "l_lip"),
}
"""Helen's merged classes (F1 over the union of the members), as FP-LIIF's Table 3 and STN-iCNN's Tables 2-4."""

HELEN = LabelSet(
    name="helen",
    classes=_ELEVEN_CLASSES,
    colors=_ELEVEN_COLORS,
    flip_pairs=((2, 3), (4, 5)),
    side="image",
    merged_f1=HELEN_GROUPS,
)

COARSE = LabelSet(
    name="coarse",
    classes=("background", "skin", "hair", "eyes", "nose", "mouth"),
    # Names shared with CelebAMask-HQ keep its colours (generic_label_set looks colours up by name).
    colors=((0, 0, 0), (204, 0, 0), (0, 0, 204), (0, 255, 255), (76, 153, 0), (102, 204, 0)),
    flip_pairs=(),
    side="none",
)
"""Six merged classes for masks: skin (with ears, neck), hair (with brows), eyes, nose, mouth (with lips)."""

_INNER_CLASSES = ("background", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "u_lip", "mouth", "l_lip")

INNER = LabelSet(
    name="inner",
    classes=_INNER_CLASSES,
    colors=tuple(CELEBAMASK_HQ.colors[CELEBAMASK_HQ.classes.index(c)] for c in _INNER_CLASSES),
    flip_pairs=((1, 2), (3, 4)),
    side="subject",
    merged_f1=HELEN_GROUPS,
)
"""Background and the eight inner face parts (STN-iCNN's classes; scored with Helen's merged groups)."""

LABEL_SETS: dict[str, LabelSet] = {s.name: s for s in (CELEBAMASK_HQ, LAPA, HELEN, COARSE, INNER)}

CELEBAMASK_TO_LAPA: dict[str, str] = {
    "background": "background",
    "skin": "skin",
    "nose": "nose",
    "eye_g": "skin",  # eyes and brows are drawn over the glasses: what is left lies over the face
    "l_eye": "r_eye",  # CelebAMask l_/r_: the subject's side; LaPa: the image's side
    "r_eye": "l_eye",
    "l_brow": "r_brow",
    "r_brow": "l_brow",
    "l_ear": "skin",
    "r_ear": "skin",
    "mouth": "mouth",
    "u_lip": "u_lip",
    "l_lip": "l_lip",
    "hair": "hair",
    "hat": "background",
    "ear_r": "skin",
    "neck_l": "background",
    "neck": "background",  # LaPa's skin is the face only
    "cloth": "background",
}
"""CelebAMask-HQ class -> LaPa class (every CelebAMask-HQ class exactly once; see the module docstring)."""

CELEBAMASK_TO_COARSE: dict[str, str] = {
    "background": "background",
    "skin": "skin",
    "nose": "nose",
    "eye_g": "skin",
    "l_eye": "eyes",
    "r_eye": "eyes",
    "l_brow": "hair",
    "r_brow": "hair",
    "l_ear": "skin",
    "r_ear": "skin",
    "mouth": "mouth",
    "u_lip": "mouth",
    "l_lip": "mouth",
    "hair": "hair",
    "hat": "background",
    "ear_r": "skin",
    "neck_l": "skin",
    "neck": "skin",
    "cloth": "background",
}
"""CelebAMask-HQ class -> coarse class."""

ELEVEN_TO_COARSE: dict[str, str] = {
    "background": "background",
    "skin": "skin",
    "l_brow": "hair",
    "r_brow": "hair",
    "l_eye": "eyes",
    "r_eye": "eyes",
    "nose": "nose",
    "u_lip": "mouth",
    "mouth": "mouth",
    "l_lip": "mouth",
    "hair": "hair",
}
"""LaPa / Helen class -> coarse class."""

CELEBAMASK_TO_INNER: dict[str, str] = {c: (c if c in _INNER_CLASSES else "background") for c in CELEBAMASK_HQ.classes}
"""CelebAMask-HQ class -> inner class: the inner parts keep their class, all others are background."""

REMAPS: dict[tuple[str, str], Mapping[str, str]] = {
    ("celebamask-hq", "lapa"): CELEBAMASK_TO_LAPA,
    ("celebamask-hq", "helen"): CELEBAMASK_TO_LAPA,  # Helen has LaPa's classes and sides
    ("celebamask-hq", "coarse"): CELEBAMASK_TO_COARSE,
    ("celebamask-hq", "inner"): CELEBAMASK_TO_INNER,
    ("lapa", "coarse"): ELEVEN_TO_COARSE,
    ("helen", "coarse"): ELEVEN_TO_COARSE,
}
"""(source set, target set) -> class-name table: the data behind :meth:`LabelSet.remap_to`."""


def get_label_set(name: str) -> LabelSet:
    """Look up a label set by name (``celebamask-hq``, ``lapa``, ``helen``, ``coarse``).

    Unknown names raise :class:`UnknownNameError` (a KeyError and a ValueError) listing the known ones.
    """
    try:
        return LABEL_SETS[name]
    except (KeyError, TypeError):
        raise _unknown(f"unknown label set {name!r}", name, sorted(LABEL_SETS)) from None


def as_label_set(s: str | LabelSet) -> LabelSet:
    """``s`` itself if it is a :class:`LabelSet`, else the known set of that name (:func:`get_label_set`)."""
    return s if isinstance(s, LabelSet) else get_label_set(s)


def remap_targets(source: str | LabelSet) -> list[str]:
    """Names of the label sets ``source`` can be remapped to (itself first)."""
    source = as_label_set(source)
    known = LABEL_SETS.get(source.name) == source
    return [source.name] + [t for (s, t) in REMAPS if known and s == source.name]


def remap_listing() -> str:
    """The built-in remappings in words: ``celebamask-hq -> lapa, helen, coarse, inner; lapa -> coarse; ...``."""
    targets: dict[str, list[str]] = {}
    for source, target in REMAPS:
        targets.setdefault(source, []).append(target)
    return "; ".join(f"{source} -> {', '.join(t)}" for source, t in targets.items())


def remap_labels(labels: np.ndarray, source: str | LabelSet, target: str | LabelSet) -> np.ndarray:
    """Remap an integer label map from label set ``source`` to ``target`` (uint8, same shape).

    ``remap_labels(labels, "celebamask-hq", "coarse")``; see :data:`REMAPS` for the mappings. The ignore index
    (255) stays; any other value that is no class of ``source`` raises ValueError.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui":
        raise ValueError(f"labels: expected an integer label map, got dtype {labels.dtype}")
    src = as_label_set(source)
    lut = src.remap_to(target)
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 255):
        raise ValueError(f"labels: values must lie in [0, 255], got [{labels.min()}, {labels.max()}]")
    if labels.size and int(labels.max()) >= src.num_classes:
        bad = np.unique(labels[(labels >= src.num_classes) & (labels != IGNORE_INDEX)])
        if bad.size:
            raise ValueError(
                f"labels: {', '.join(map(str, bad[:5].tolist()))}{' ...' if bad.size > 5 else ''} are no class of "
                f"{src.name!r} (0..{src.num_classes - 1}; {IGNORE_INDEX} = ignore)"
            )
    return lut[labels]


def remap_confusion(matrix: np.ndarray, source: str | LabelSet, target: str | LabelSet) -> np.ndarray:
    """A (C, C) confusion matrix (rows: ground truth, columns: prediction, in ``source``'s classes) in ``target``'s
    classes: the counts of all source classes that map to one target class are summed (rows and columns).

    The same counts as remapping both label maps with :func:`remap_labels` before counting, so a model's scores
    in a merged set follow from its scores in its own set. On ``celebamask-hq`` -> ``inner`` the per-class
    F1 of an inner class is unchanged (its TP, FP and FN are); the background and the merged groups change.
    """
    src = as_label_set(source)
    m = np.asarray(matrix)
    if m.shape != (src.num_classes, src.num_classes) or m.dtype.kind not in "ui":
        raise ValueError(
            f"matrix: expected integer counts of shape ({src.num_classes}, {src.num_classes}) for label set "
            f"{src.name!r}, got {m.dtype} {m.shape}"
        )
    lut = src.remap_to(target)[: src.num_classes].astype(np.int64)
    n = as_label_set(target).num_classes
    if (lut >= n).any():
        raise ValueError(f"label set {src.name!r} has classes without a counterpart in {as_label_set(target).name!r}")
    out = np.zeros((n, n), dtype=np.int64)
    np.add.at(out, (lut[:, None], lut[None, :]), m.astype(np.int64))
    return out


def resolve_label_set(classes: str | Sequence[str], name: str = "custom") -> LabelSet:
    """The one resolver of a label set: a set name, or a list of class names.

    A list equal to a known set's classes gives that set (``name`` first, if it is such a set: LaPa and Helen
    share their classes); any other list a :func:`generic_label_set` called ``name``. Lists need two or more
    distinct names. Unknown set names raise :class:`UnknownNameError` listing the known ones.
    """
    if isinstance(classes, str):
        return get_label_set(classes)
    names = tuple(classes)
    named = not isinstance(classes, Mapping) and all(isinstance(n, str) and n for n in names)
    if not named or len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"classes: expected a label-set name or 2 or more distinct class names, got {classes!r:.200}")
    known = [LABEL_SETS[name]] if name in LABEL_SETS else []
    for s in (*known, *LABEL_SETS.values()):
        if s.classes == names:
            return s
    return generic_label_set(names, name=name)


def index_png(labels: np.ndarray, label_set: LabelSet, compress_level: int = 6, optimize: bool = False) -> bytes:
    """An 8-bit index PNG of a label map (pixel value = class index) with ``label_set``'s palette embedded."""
    import io

    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    img.putpalette(label_set.palette())
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level, optimize=optimize)
    return buf.getvalue()


_SIDE_WORDS = (("l_", "r_"), ("left_", "right_"))
"""Left/right prefixes of a class name (case-insensitive); the suffixes are their mirror: ``_l``/``_r``, ``_left``/
``_right``."""


def _right_of(name: str) -> str | None:
    """The lower-cased right-hand counterpart of a left-hand class name (``l_eye``, ``Left_eye``, ``eye_L``,
    ``eye_left`` -> ``r_eye``, ``right_eye``, ``eye_r``, ``eye_right``), None if the name names no left side."""
    low = name.lower()
    for left, right in _SIDE_WORDS:
        if low.startswith(left) and len(low) > len(left):
            return right + low[len(left) :]
        tail_l, tail_r = "_" + left[:-1], "_" + right[:-1]
        if low.endswith(tail_l) and len(low) > len(tail_l):
            return low[: -len(tail_l)] + tail_r
    return None


def left_right_pairs(classes: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """(left, right) class index pairs of a class list: a left-hand name (prefix ``l_``/``left_`` or suffix
    ``_l``/``_left``, any case) pairs with the one class named like it with the right-hand word in its place
    (``r_``/``right_``, ``_r``/``_right``; case-insensitive), and only when that class exists."""
    lower = [c.lower() for c in classes]
    pairs = []
    for i, c in enumerate(classes):
        right = _right_of(c)
        if right is not None and lower.count(right) == 1 and lower.count(c.lower()) == 1:
            pairs.append((i, lower.index(right)))
    return tuple(pairs)


def generic_label_set(classes: list[str] | tuple[str, ...], name: str = "custom") -> LabelSet:
    """A label set for a user-supplied class list: known names keep their colours, left/right names pair up
    (:func:`left_right_pairs`)."""
    known = {c: rgb for s in LABEL_SETS.values() for c, rgb in zip(s.classes, s.colors, strict=True)}
    rng = np.random.default_rng(0)
    colors = tuple(known.get(c, tuple(int(v) for v in rng.integers(32, 256, 3))) for c in classes)
    pairs = left_right_pairs(classes)
    return LabelSet(name=name, classes=tuple(classes), colors=colors, flip_pairs=pairs, side="subject")
