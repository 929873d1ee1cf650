"""Labels continued past the windows' edges, guided by the photo (docs/detection.md, "Past the windows: GrabCut").

The parser's windows are finite: where clothes, hair or neck go on past the outer edge of a face's context
windows, their labels end in a straight line. :func:`extend_labels` continues each outer class past that edge with
OpenCV's GrabCut (Rother et al., SIGGRAPH 2004: colour mixture models of the class and of the rest, and a
contrast-sensitive graph cut), seeded by the parser's own labels: inside the windows the class's pixels are
definite foreground and every other label definite background; outside them, within ``reach`` of a window's side
of the class's pixels at the edge, pixels are probable background (or foreground, ``init="fg"``) for GrabCut to
decide. Only pixels outside every window change, and only those connected to the class where it meets the edge.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .geometry import Window

# The share of a window's side that the labels may reach past it; GrabCut iterations; the side of the working image
# GrabCut runs on (the zone is resized to fit); measured in docs/detection.md. The classes: framing.EXTEND_CLASSES.
EXTEND_REACH = 0.5
EXTEND_ITERATIONS = 1
EXTEND_WORK_SIDE = 192
# A class continues only where it holds at least this many working pixels along the windows' edge.
MIN_EDGE_PIXELS = 4


def window_mask(shape: tuple[int, int], windows: Sequence[Window]) -> np.ndarray:
    """(H, W) bool: the pixels of an H x W photo inside any of ``windows`` (pixel centres, as the parser pastes)."""
    h, w = shape
    out = np.zeros((h, w), bool)
    for win in windows:
        xa, ya, xb, yb = win.region(w, h)
        if xb > xa and yb > ya:
            out[ya:yb, xa:xb] |= win.crop_coords(np.arange(ya, yb), np.arange(xa, xb))[1].reshape(yb - ya, xb - xa)
    return out


def extend_labels(
    image: np.ndarray,
    labels: np.ndarray,
    windows: Sequence[Window],
    classes: Sequence[int],
    reach: float = EXTEND_REACH,
    iterations: int = EXTEND_ITERATIONS,
    confident: np.ndarray | None = None,
    init: str = "bg",
    work_side: int = EXTEND_WORK_SIDE,
    others: Sequence[Window] = (),
    gate: bool = True,
) -> np.ndarray:
    """A copy of ``labels`` (H, W) uint8 with the ``classes`` (indices, in order) continued past the edge of
    ``windows`` (the windows whose labels ``labels`` holds: a face's context windows) into ``image`` (H, W, 3 uint8
    RGB): only pixels outside every window and within ``reach`` of a window's side past it change, to a class
    GrabCut separates from the rest and that connects to the class's labels at the edge.

    ``confident`` (H, W) bool: the labels to trust as seeds (None: all); the others are only probable.
    ``init``: the pixels past the edge start as probable background (``"bg"``) or foreground (``"fg"``).
    ``gate``: only within ``reach`` of the class's own pixels at the edge (else anywhere in the zone).
    ``others``: other faces' windows in the photo (call once per face): their pixels never change, and their labels
    are seeds too. GrabCut runs on the zone's bounding box resized to at most ``work_side`` pixels."""
    image, labels = _check(image, labels, confident, init, reach, iterations)
    out = labels.copy()
    own = window_mask(labels.shape, windows)
    covered = own | window_mask(labels.shape, others)
    zone = window_mask(labels.shape, [w.scaled(1 + 2 * reach) for w in windows]) & ~covered
    if not zone.any() or not classes:
        return out
    ys, xs = np.nonzero(zone | own)
    ya, yb, xa, xb = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    roi = (slice(ya, yb), slice(xa, xb))
    scale = min(1.0, work_side / max(yb - ya, xb - xa))
    small = _resize(image[roi], scale, cv2.INTER_AREA)
    lab = _resize(labels[roi], scale, cv2.INTER_NEAREST)
    sure = np.ones(lab.shape, bool) if confident is None else _resize(confident[roi], scale, cv2.INTER_NEAREST) > 0
    cov = _resize(covered[roi], scale, cv2.INTER_NEAREST) > 0
    zon = _resize(zone[roi], scale, cv2.INTER_NEAREST) > 0
    taken = np.zeros(lab.shape, bool)
    near = reach * max(w.side for w in windows) * scale if gate else None
    for k in classes:
        fg = _grabcut(small, lab == k, cov, zon & ~taken, sure, iterations, init, near)
        if fg is None:
            continue
        taken |= fg
        fg |= _astride(lab == k, cov, fg)
        grown = _resize(fg.astype(np.uint8), 1 / scale, cv2.INTER_NEAREST, (xb - xa, yb - ya)) > 0
        mine = out[roi] == k
        new = _connected(grown & zone[roi] & (out[roi] == 0), mine & covered[roi])
        out[roi][new] = k
    return out


def _grabcut(
    small: np.ndarray,
    cls: np.ndarray,
    covered: np.ndarray,
    zone: np.ndarray,
    sure: np.ndarray,
    iterations: int,
    init: str,
    near: float | None = None,
) -> np.ndarray | None:
    """(h, w) bool: GrabCut's foreground in ``zone`` for one class (``cls``: its labels), or None where the class
    does not reach the windows' edge (``covered`` next to ``zone``) or one side has no seed; ``near``: only within
    that distance (working pixels) of the class's pixels at the edge."""
    edge = cls & covered & _ring(zone, covered)
    if edge.sum() < MIN_EDGE_PIXELS or (covered & ~cls).sum() == 0:
        return None
    if near is not None:
        zone = zone & (cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 3) <= near)
    mask = np.full(cls.shape, cv2.GC_BGD, np.uint8)
    mask[covered & cls] = np.where(sure[covered & cls], cv2.GC_FGD, cv2.GC_PR_FGD)
    mask[covered & ~cls] = np.where(sure[covered & ~cls], cv2.GC_BGD, cv2.GC_PR_BGD)
    mask[zone] = cv2.GC_PR_FGD if init == "fg" else cv2.GC_PR_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return zone & ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD))


def _astride(cls: np.ndarray, covered: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """(h, w) bool: working pixels astride the windows' edge that hold the class (``cls``, ``covered``: what the
    nearest-resized labels and windows say there) next to GrabCut's foreground ``fg``. The photo pixels they span
    past the edge belong to the foreground too: without them the class would stop up to one working pixel short
    of the edge (a seam) and, where that gap runs all along it, not connect to its labels at all."""
    return cls & covered & (cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)


def _ring(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of ``outer`` 8-adjacent to ``inner``."""
    return outer & (cv2.dilate(inner.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)


def _connected(grown: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The pixels of ``grown`` 8-connected (through ``grown``) to a pixel of ``seeds``."""
    _, comp = cv2.connectedComponents((grown | seeds).astype(np.uint8), connectivity=8)
    keep = np.unique(comp[seeds])
    return grown & np.isin(comp, keep[keep > 0])


def _resize(x: np.ndarray, scale: float, interp: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """``x`` resized by ``scale`` (or to ``size`` (w, h)); bool becomes uint8."""
    x = x.astype(np.uint8) if x.dtype == bool else x
    if size is None:
        if scale == 1:
            return x
        size = (max(1, round(x.shape[1] * scale)), max(1, round(x.shape[0] * scale)))
    return x if size == (x.shape[1], x.shape[0]) else cv2.resize(x, size, interpolation=interp)


def _check(
    image: np.ndarray, labels: np.ndarray, confident: np.ndarray | None, init: str, reach: float, iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``image`` (H, W, 3 uint8) and ``labels`` (H, W uint8), or a ValueError naming the argument."""
    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}")
    if labels.shape != image.shape[:2] or labels.dtype != np.uint8:
        raise ValueError(f"labels: expected an {image.shape[:2]} uint8 array, got {labels.dtype} {labels.shape}")
    if confident is not None and np.shape(confident) != labels.shape:
        raise ValueError(f"confident: expected an {labels.shape} bool array, got shape {np.shape(confident)}")
    if init not in ("bg", "fg"):
        raise ValueError(f"init: expected 'bg' or 'fg', got {init!r}")
    if not reach > 0:
        raise ValueError(f"reach: expected a positive share of a window's side, got {reach}")
    if int(iterations) < 1:
        raise ValueError(f"iterations: expected at least 1, got {iterations}")
    return image, labels
