"""Crops, query coordinates and paste-back, in numpy (shared by the torch and onnxruntime paths).

Conventions: coordinates are (x, y) in [-1, 1] over a crop, at pixel centres (``align_corners=False``,
as :func:`fpliif.models.pixel_centers`). A crop window (:class:`Window`) is an integer square
``(x0, y0, side)`` in image pixels, rotated by ``angle`` about its centre ``c = (x0 + side/2, y0 + side/2)``
(a similarity transform: the face's roll, so that the eyes are level in the crop). Image pixel
``(px, py)`` has crop coordinates ``R(-angle) ((px + 0.5, py + 0.5) - c) / (side / 2)``; unrotated, that is
``((2 (px - x0) + 1) / side - 1, (2 (py - y0) + 1) / side - 1)``: exactly the pixel centres of the
model's ``side x side`` output. Decoding the implicit model there *is* the inverse warp: labels land on the
original pixels without resampling an image or a label map.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def pixel_centers(h: int, w: int) -> np.ndarray:
    """(h*w, 2) float32 (x, y) pixel-centre coordinates of an h x w grid over [-1, 1], row-major."""
    return grid_coords(np.arange(h), np.arange(w), h, w)


def grid_coords(rows: np.ndarray, cols: np.ndarray, h: float, w: float) -> np.ndarray:
    """(len(rows)*len(cols), 2) float32 coordinates of the given pixel rows/cols of an h x w grid."""
    ys = (np.asarray(rows, np.float64) * 2 + 1) / h - 1
    xs = (np.asarray(cols, np.float64) * 2 + 1) / w - 1
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx, gy], axis=-1).reshape(-1, 2).astype(np.float32)


def index_coords(idx: np.ndarray, h: int, w: int) -> np.ndarray:
    """(..., 2) float32 (x, y) coordinates of the pixel centres with flat indices ``idx`` (row-major) of an h x w
    grid: the arithmetic of :func:`grid_coords` (float64, then float32)."""
    idx = np.asarray(idx)
    y = ((idx // w).astype(np.float64) * 2 + 1) / h - 1
    x = ((idx % w).astype(np.float64) * 2 + 1) / w - 1
    return np.stack([x, y], axis=-1).astype(np.float32)


def visible_region(x0: int, y0: int, side: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The part of the window inside a width x height image: (xa, ya, xb, yb), end-exclusive (maybe empty)."""
    return max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)


@dataclass(frozen=True)
class Window:
    """A square crop window: the integer square ``(x0, y0, side)`` rotated by ``angle`` degrees about its centre.

    ``angle`` is the face's in-plane roll in image coordinates (y down): the crop's x axis points along
    ``(cos angle, sin angle)`` in the image, so a face whose eye line has that direction comes out with level
    eyes (positive = clockwise on screen). Iterates as ``(x0, y0, side)``.
    """

    x0: int
    y0: int
    side: int
    angle: float = 0.0

    def __iter__(self) -> Iterator[int]:
        return iter((self.x0, self.y0, self.side))

    @property
    def centre(self) -> tuple[float, float]:
        return self.x0 + self.side / 2, self.y0 + self.side / 2

    def _cos_sin(self) -> tuple[float, float]:
        if self.angle == 0:
            return 1.0, 0.0
        a = math.radians(self.angle)
        return math.cos(a), math.sin(a)

    def corners(self) -> np.ndarray:
        """(4, 2) image coordinates of the window's corners (pixel edges at integers)."""
        (cx, cy), (c, s), h = self.centre, self._cos_sin(), self.side / 2
        d = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
        return np.stack([cx + c * d[:, 0] - s * d[:, 1], cy + s * d[:, 0] + c * d[:, 1]], axis=1)

    def region(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Pixels of a width x height image the window may cover: its bounding box clipped to the image,
        (xa, ya, xb, yb), end-exclusive (maybe empty). Unrotated: :func:`visible_region`."""
        if self.angle == 0:
            return visible_region(self.x0, self.y0, self.side, width, height)
        p = self.corners()
        xa, ya = (int(math.floor(v + 1e-9)) for v in p.min(axis=0))
        xb, yb = (int(math.ceil(v - 1e-9)) for v in p.max(axis=0))
        return max(xa, 0), max(ya, 0), min(xb, width), min(yb, height)

    def scaled(self, factor: float) -> Window:
        """The window ``factor`` times as large (side rounded to keep the centre exact), same centre and angle."""
        grow = int(round((float(factor) - 1) * self.side / 2))
        return Window(self.x0 - grow, self.y0 - grow, self.side + 2 * grow, self.angle)

    def lowered(self, share: float) -> Window:
        """The window moved ``share`` of its side down its own (rolled) vertical axis, same side and angle (the
        centre rounded to whole pixels)."""
        c, s = self._cos_sin()
        step = float(share) * self.side
        return Window(int(round(self.x0 - s * step)), int(round(self.y0 + c * step)), self.side, self.angle)

    def image_points(self, coords: np.ndarray) -> np.ndarray:
        """(P, 2) image coordinates (x, y; pixel edges at integers) of crop coordinates ``coords`` (P, 2) in [-1, 1]:
        the inverse of :meth:`crop_coords`."""
        (cx, cy), (c, s), h = self.centre, self._cos_sin(), self.side / 2
        u, v = np.asarray(coords, np.float64).T * h
        return np.stack([cx + c * u - s * v, cy + s * u + c * v], axis=1)

    def crop_coords(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Crop coordinates (len(rows) * len(cols), 2) float32 of image pixels (rows x cols, row-major), and
        whether each lies inside the window (bool; always true for an unrotated window's own pixels)."""
        cx, cy = self.centre
        dx = np.asarray(cols, np.float64) + 0.5 - cx
        dy = np.asarray(rows, np.float64) + 0.5 - cy
        c, s = self._cos_sin()
        h = self.side / 2
        # per pixel (c * dx + s * dy) / h and (-s * dx + c * dy) / h, float64, the products formed once per row and
        # column (the values of a meshgrid of dx, dy; tests/test_detect_align.py), written straight into float32
        u = ((c * dx)[None, :] + (s * dy)[:, None]) / h if self.angle else np.broadcast_to(dx / h, (dy.size, dx.size))
        v = ((-s * dx)[None, :] + (c * dy)[:, None]) / h if self.angle else np.broadcast_to((dy / h)[:, None], u.shape)
        xy = np.empty((u.size, 2), np.float32)
        xy[:, 0], xy[:, 1] = u.ravel(), v.ravel()
        inside = (np.abs(u) < 1) & (np.abs(v) < 1)
        return xy, inside.ravel()

    def crop_to_image(self) -> np.ndarray:
        """2 x 3 affine matrix from crop pixel indices to image pixel indices (both with pixel centres at
        integers), e.g. for ``cv2.warpAffine(..., flags=WARP_INVERSE_MAP)``."""
        (cx, cy), (c, s), h = self.centre, self._cos_sin(), self.side / 2
        # image = c + R (crop + 0.5 - h) - 0.5
        tx = cx - 0.5 + c * (0.5 - h) - s * (0.5 - h)
        ty = cy - 0.5 + s * (0.5 - h) + c * (0.5 - h)
        return np.array([[c, -s, tx], [s, c, ty]], np.float64)


def feather_weights(coords: np.ndarray, band: float) -> np.ndarray:
    """(P,) float32 weight of a face window's own prediction at crop ``coords`` (P, 2) when it is blended with
    its context window's: 1 inside the inner square ``max(|x|, |y|) <= 1 - band``, falling linearly to 0 at the
    window's edge (and 0 beyond it), so that the labels pass smoothly into the context window's; ``band`` in
    (0, 1] is the width of the blend band in half-sides (0: a hard switch at the edge, all ones inside)."""
    c = np.abs(np.asarray(coords, np.float32))
    m = np.maximum(c[..., 0], c[..., 1])
    if band <= 0:
        return (m < 1).astype(np.float32)
    return np.clip((1 - m) / np.float32(band), 0, 1).astype(np.float32)


def extract_crop(image: np.ndarray, win: Window, pad: str = "edge") -> np.ndarray:
    """(side, side, 3) pixels of ``image`` under ``win`` (bilinear when rotated); outside the image padded as
    :func:`crop_window` (``edge`` or ``zero``)."""
    if win.angle == 0:
        return crop_window(image, win.x0, win.y0, win.side, pad)
    import cv2

    if pad not in ("edge", "zero"):
        raise ValueError(f"pad: expected 'edge' or 'zero', got {pad!r}")
    border = cv2.BORDER_REPLICATE if pad == "edge" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        win.crop_to_image(),
        (win.side, win.side),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=border,
        borderValue=(0, 0, 0),
    )


def crop_window(image: np.ndarray, x0: int, y0: int, side: int, pad: str = "edge") -> np.ndarray:
    """(side, side, 3) crop of ``image`` at (x0, y0); parts outside the image are padded
    (``edge``: replicate the border, ``zero``: black)."""
    import cv2

    h, w = image.shape[:2]
    xa, ya, xb, yb = visible_region(x0, y0, side, w, h)
    if xb <= xa or yb <= ya:
        return np.zeros((side, side, image.shape[2]), image.dtype)
    inner = image[ya:yb, xa:xb]
    top, left, bottom, right = ya - y0, xa - x0, y0 + side - yb, x0 + side - xb
    if top == left == bottom == right == 0:
        return np.ascontiguousarray(inner)
    if pad == "edge":
        return cv2.copyMakeBorder(np.ascontiguousarray(inner), top, bottom, left, right, cv2.BORDER_REPLICATE)
    if pad == "zero":
        return cv2.copyMakeBorder(
            np.ascontiguousarray(inner), top, bottom, left, right, cv2.BORDER_CONSTANT, value=(0, 0, 0)
        )
    raise ValueError(f"pad: expected 'edge' or 'zero', got {pad!r}")


def resize_rgb(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """``img`` resized to (h, w): area averaging to shrink (anti-aliased), bicubic to enlarge."""
    import cv2

    shrink = h < img.shape[0] or w < img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def model_input(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8/float RGB -> (3, h, w) float32 in [0, 1] at ``size`` = (h, w).

    Downscaling uses area averaging (anti-aliased), upscaling bicubic.
    """
    h, w = size
    if image.shape[:2] != (h, w):
        image = resize_rgb(image, h, w)
    if image.dtype == np.uint8:
        out = image.astype(np.float32) / 255.0
    else:
        out = np.clip(image.astype(np.float32), 0.0, 1.0)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def softmax(logits: np.ndarray, temperature: float = 1.0, axis: int = -1) -> np.ndarray:
    x = np.divide(logits, np.float32(temperature), dtype=np.float32)
    x -= x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x


# Per-pixel arrays with the classes first, (C, P): numpy reduces the 19 classes of a pixel ~10x faster as 19
# contiguous rows than as 19 neighbouring floats (the max of 65536 x 19 logits, one thread: 0.25 against 2.9 ms).
# The helpers below give exactly the values of their (P, C) counterparts (tests/test_adaptive_exact.py).
def channels_first(x: np.ndarray) -> np.ndarray:
    """(C, P) contiguous copy of a (P, C) array (``cv2.transpose`` for float32: ~5x numpy's copy of ``x.T``)."""
    if x.dtype != np.float32 or x.ndim != 2 or 0 in x.shape:
        return np.array(x.T, order="C")
    import cv2

    return cv2.transpose(np.ascontiguousarray(x))


def max_first(x: np.ndarray) -> np.ndarray:
    """(P,) maximum over the classes of a (C, P) array: ``x.T.max(axis=-1)``."""
    return np.maximum.reduce(x, axis=0)


def argmax_first(x: np.ndarray, top: np.ndarray | None = None) -> np.ndarray:
    """(P,) index of the first maximum over the classes of a (C, P) array (``top``: its :func:`max_first`, if known):
    ``x.T.argmax(axis=-1)``, from the classes equal to the maximum, each keyed by ``C - index`` in uint8."""
    c = x.shape[0]
    if c > 255 or c == 0:
        return x.argmax(axis=0)
    top = max_first(x) if top is None else top
    keys = (x == top) * np.arange(c, 0, -1, dtype=np.uint8)[:, None]
    first = c - np.maximum.reduce(keys, axis=0).astype(np.intp)
    return x.argmax(axis=0) if c in first else first  # a NaN maximum: numpy's own rule


def sum_first(x: np.ndarray) -> np.ndarray:
    """(P,) float32 sum over the classes of a (C, P) array, added in the order of numpy's pairwise summation of each
    pixel's C values (8 running sums, so ``x.T.sum(axis=-1)``, bit for bit)."""
    c = x.shape[0]
    if c < 8:
        out = np.zeros(x.shape[1:], x.dtype)
        for row in x:
            out += row
        return out
    if c > 128:  # numpy halves longer runs at a multiple of 8
        half = c // 2 - (c // 2) % 8
        return sum_first(x[:half]) + sum_first(x[half:])
    r = x[:8].copy()
    end = c - c % 8
    for i in range(8, end, 8):
        r += x[i : i + 8]
    out = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for row in x[end:]:
        out += row
    return out


def softmax_first(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """:func:`softmax` over the classes of (C, P) ``logits``: (C, P) float32, the values of ``softmax(logits.T).T``."""
    x = np.divide(logits, np.float32(temperature), dtype=np.float32)
    x -= max_first(x)
    np.exp(x, out=x)
    x /= sum_first(x)
    return x


def bilinear_rows_cols(grid: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """Sample an (M, N, C) grid at all pairs of fractional row/col positions (pixel units, clamped): blended along
    the rows, then the columns."""
    y0, y1, x0, x1, wy, wx = _point_taps(*grid.shape[:2], src_y, src_x)
    rows = _blend(np.take(grid, y0, axis=0), np.take(grid, y1, axis=0), wy[:, None, None])
    return _blend(np.take(rows, x0, axis=1), np.take(rows, x1, axis=1), wx[None, :, None])


def _point_taps(m: int, n: int, src_y: np.ndarray, src_x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows y0, y1, cols x0, x1 and float32 weights wy, wx of bilinear taps at fractional positions (clamped)."""
    sy = np.clip(np.asarray(src_y, np.float64), 0, m - 1)
    sx = np.clip(np.asarray(src_x, np.float64), 0, n - 1)
    y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, m - 1), np.minimum(x0 + 1, n - 1)
    return y0, y1, x0, x1, (sy - y0).astype(np.float32), (sx - x0).astype(np.float32)


def bilinear_points(grid: np.ndarray, src_y: np.ndarray, src_x: np.ndarray, rows_first: bool = False) -> np.ndarray:
    """Sample an (M, N, C) grid at (P,) fractional row/col positions (pixel units, clamped): (P, C).

    ``rows_first``: blend along the rows before the columns, the order (and so the float32 values) of
    :func:`bilinear_rows_cols`; else the columns first."""
    m, n = grid.shape[:2]
    y0, y1, x0, x1, wy, wx = _point_taps(m, n, src_y, src_x)
    flat = grid.reshape(m * n, -1)
    (a0, a1, wa), (b0, b1, wb) = ((y0, y1, wy), (x0, x1, wx))[:: 1 if rows_first else -1]

    def tap(ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
        return np.take(flat, ia * n + ib if rows_first else ib * n + ia, axis=0)

    wa, wb = wa[:, None], wb[:, None]
    near = _blend(tap(a0, b0), tap(a1, b0), wa)
    far = _blend(tap(a0, b1), tap(a1, b1), wa)
    return _blend(near, far, wb)


def _blend(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a * (1 - w) + b * w``, in place in ``a`` and ``b`` (the same float32 operations)."""
    a *= 1 - w
    b *= w
    a += b
    return a


def mark_taps(mask: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> None:
    """Set the pixels of an (M, N) bool ``mask`` that :func:`bilinear_points` reads at these positions."""
    y0, y1, x0, x1, _, _ = _point_taps(*mask.shape, src_y, src_x)
    for ys in (y0, y1):
        for xs in (x0, x1):
            mask[ys, xs] = True


def grid_positions(coords: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (row, col) positions on a g x g crop grid (pixel centres) of crop ``coords`` (P, 2) (x, y)."""
    return (coords[:, 1] + 1) * (g / 2) - 0.5, (coords[:, 0] + 1) * (g / 2) - 0.5


def strips(rows: int, cols: int, max_pixels: int) -> list[tuple[int, int]]:
    """Split ``rows`` into [start, end) strips of at most ``max_pixels`` pixels (at least one row each)."""
    step = max(1, max_pixels // max(cols, 1))
    return [(r, min(r + step, rows)) for r in range(0, rows, step)]


FACE_LEVEL = 2
"""Canvas priority of a face window's own labels."""
CONTEXT_LEVEL = 1
"""Canvas priority of context-window labels (outside the face windows): any face window's labels beat them."""


_CONF_BITS = 30
"""A confidence's float32 bit pattern fits in this many bits (any float in [0, 2) does)."""
MAX_LEVEL = 3
"""Highest :class:`Canvas` priority (levels 0..3 and a confidence share one uint32 key)."""


def priority_keys(conf: np.ndarray, level: int) -> np.ndarray:
    """uint32 keys that order (level, confidence) pairs as :class:`Canvas` merges them: a higher ``level`` (0 to
    :data:`MAX_LEVEL`) beats any confidence of a lower one, and within a level the keys compare exactly as the
    float32 confidences (the bit pattern of a non-negative float grows with its value). Every key is above 0, the
    key of a pixel nothing was pasted on. NaN and negative confidences count as 0, any above 1.9 as 1.9."""
    if isinstance(level, bool) or level not in range(MAX_LEVEL + 1):
        raise ValueError(f"level: expected an integer in [0, {MAX_LEVEL}], got {level!r}")
    c = np.asarray(conf, np.float32)
    bits = np.where(c > 0, np.minimum(c, np.float32(1.9)), np.float32(0)).view(np.uint32)
    return bits + np.uint32((level << _CONF_BITS) + 1)


def detached(labels: np.ndarray, seeds: np.ndarray, bridge: int = 0) -> np.ndarray:
    """(H, W) bool: the labelled pixels (``labels`` > 0) whose 8-connected labelled region holds no pixel of
    ``seeds`` ((H, W) bool). With a face's own pixels as seeds (skin, nose, eyes... inside its detection box), these
    are labels attached to no face: a blob of "hair" on a wall beside the head. ``bridge``: regions closer than
    about twice this many pixels count as one (the labels dilated by a disc of that radius; 0: touching only)."""
    import cv2

    labelled = labels > 0
    fg = labelled.view(np.uint8)
    if bridge > 0:
        fg = cv2.dilate(fg, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * bridge + 1, 2 * bridge + 1)))
    count, comp = cv2.connectedComponents(fg, connectivity=8)
    keep = np.zeros(count, bool)
    keep[np.unique(comp[seeds & labelled])] = True
    keep[0] = True  # the unlabelled pixels
    return labelled & ~keep[comp]


def key_confidence(keys: np.ndarray) -> np.ndarray:
    """float32 confidence of :func:`priority_keys` (1.0 where the key is 0, nothing pasted: one-hot background)."""
    conf = ((keys - np.uint32(1)) & np.uint32((1 << _CONF_BITS) - 1)).view(np.float32)
    return np.where(keys == 0, np.float32(1), conf)


class Canvas:
    """Whole-image merge of per-face predictions: the higher priority ``level`` wins (a face window over a context
    window), and where crops of the same level overlap, the more confident face wins.

    Memory: the (H, W) uint8 label map, plus one uint32 key per pixel (:func:`priority_keys`: level and confidence
    in one number, compared exactly) only in the :attr:`TILE` x :attr:`TILE` tiles some window reached, plus the
    (C, H, W) float32 probabilities only with ``keep_probs``. A photo with one face thus costs about its label map,
    not 6 bytes for every pixel of the photo."""

    TILE = 256

    def __init__(self, height: int, width: int, num_classes: int, keep_probs: bool = False):
        self.labels = np.zeros((height, width), np.uint8)
        self._keys: dict[tuple[int, int], np.ndarray] = {}
        self.probs = None
        if keep_probs:
            self.probs = np.zeros((num_classes, height, width), np.float32)
            self.probs[0] = 1.0

    def _tiles(self, ya: int, xa: int, h: int, w: int) -> Iterator[tuple[np.ndarray, slice, slice]]:
        """The key tiles under the rectangle (ya, xa, h, w) (created, all unset, on first use), each with the
        rectangle's rows and cols it holds: (tile's part, rows, cols) in rectangle coordinates."""
        t, (height, width) = self.TILE, self.labels.shape
        if h <= 0 or w <= 0:
            return
        for ty in range(ya // t, (ya + h - 1) // t + 1):
            for tx in range(xa // t, (xa + w - 1) // t + 1):
                tile = self._keys.get((ty, tx))
                if tile is None:
                    shape = (min(t, height - ty * t), min(t, width - tx * t))
                    tile = self._keys[ty, tx] = np.zeros(shape, np.uint32)
                y0, x0 = max(ya, ty * t), max(xa, tx * t)
                y1, x1 = min(ya + h, (ty + 1) * t), min(xa + w, (tx + 1) * t)
                part = tile[y0 - ty * t : y1 - ty * t, x0 - tx * t : x1 - tx * t]
                yield part, slice(y0 - ya, y1 - ya), slice(x0 - xa, x1 - xa)

    def paste(
        self, ya: int, xa: int, probs: np.ndarray, inside: np.ndarray | None = None, level: int = FACE_LEVEL
    ) -> np.ndarray:
        """Merge (C, h, w) probabilities (classes first, as :attr:`probs`) at (ya, xa), only where ``inside`` (h, w)
        is true if given (a rotated window's pixels), with priority ``level``; return this face's own labels there
        (h, w) uint8 (0 outside): the first most probable class, as ``argmax``."""
        h, w = probs.shape[1:]
        flat = probs.reshape(probs.shape[0], h * w)
        top = max_first(flat)
        lab = argmax_first(flat, top).astype(np.uint8).reshape(h, w)
        keys = priority_keys(top.reshape(h, w), level)
        win = np.zeros((h, w), bool)
        for old, rows, cols in self._tiles(ya, xa, h, w):
            new = keys[rows, cols]
            won = new > old
            if inside is not None:
                won &= inside[rows, cols]
            old[won] = new[won]
            win[rows, cols] = won
        if inside is not None:
            lab[~inside] = 0
        self.labels[ya : ya + h, xa : xa + w][win] = lab[win]
        if self.probs is not None:
            ys, xs = np.nonzero(win)
            self.probs[:, ya + ys, xa + xs] = probs[:, ys, xs]
        return lab

    def drop_detached(self, seeds: np.ndarray) -> np.ndarray:
        """Reset to background, as if nothing was pasted there, the labelled pixels whose connected labelled
        region holds no pixel of ``seeds`` ((H, W) bool; :func:`detached`); return that (H, W) mask."""
        lost = detached(self.labels, seeds)
        if lost.any():
            self.relabel(np.where(lost, np.uint8(0), self.labels))
        return lost

    def relabel(self, labels: np.ndarray) -> np.ndarray:
        """Take ``labels`` ((H, W) uint8) where they differ from the canvas's, one-hot and confidence 1 there (for
        labels that come without probabilities: :func:`fpliif.infer.extend.extend_labels`); return that mask."""
        changed = labels != self.labels
        if not changed.any():
            return changed
        ys, xs = np.nonzero(changed)
        self.labels[ys, xs] = labels[ys, xs]
        if self.probs is not None:
            self.probs[:, ys, xs] = 0.0
            self.probs[self.labels[ys, xs], ys, xs] = 1.0
        for keys, where in self._key_tiles():
            keys[changed[where]] = 0
        return changed

    def confidence(self) -> np.ndarray:
        """Max probability per pixel (1.0 where no face was parsed: one-hot background)."""
        out = np.ones(self.labels.shape, np.float32)
        for keys, where in self._key_tiles():
            out[where] = key_confidence(keys)
        return out

    def _key_tiles(self) -> Iterator[tuple[np.ndarray, tuple[slice, slice]]]:
        """Every key tile made so far, with the image rows and columns it covers."""
        t = self.TILE
        for (ty, tx), keys in self._keys.items():
            yield keys, (slice(ty * t, ty * t + keys.shape[0]), slice(tx * t, tx * t + keys.shape[1]))
