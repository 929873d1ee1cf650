"""Adaptive (coarse-to-fine) querying of an implicit decoder, PointRend-style.

A face label map is constant almost everywhere, and FP-LIIF can be queried at any point. So instead of
decoding every output pixel (dense), :func:`adaptive_decode`:

1. decodes densely on a coarse grid: the output halved per axis up to ``max_levels`` times, each side kept
   at least ``min_coarse`` (by default twice the latent grid's side, two samples per latent cell: coarser grids
   miss thin parts such as narrow eyes; an axis whose half would drop below it steps to ``min_coarse`` itself
   where that is at most :data:`LAST_STEP` of it, else stays);
2. upsamples the logits bilinearly (``align_corners=False``) to the next level (x2, or exactly that level's
   size where a step is not x2, so odd and non-square sizes work);
3. re-queries the decoder, at the exact pixel centres of that level, only where the upsampled prediction is
   uncertain: within ``radius`` pixels of a label change, or with a top-2 probability margin below
   ``margin``; then, up to ``passes`` times, also at not-yet-queried pixels next to label changes that the
   new values revealed (boundaries that moved);
4. repeats up to the requested size. Pixels never re-queried keep their interpolated logits.

Re-queried pixels carry the decoder's own values; the others keep interpolated logits, whose labels equal
dense decoding's wherever the map is locally uniform and confident. Labels can differ only where a structure
finer than the coarse grid's spacing is missed entirely, or at a near-tie the margin test lets through. On a
label map that is noise everywhere, adaptive decoding can run more points than dense (at most every pixel of
every level once: about 4/3 of dense). ``decode="dense"`` (the default everywhere) gives the
exact dense result.

Works on numpy arrays (the parser's backends, onnxruntime included) and torch tensors (the model,
evaluation); torch is imported only for torch inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .limits import check_deadline

DECODE_MODES = ("dense", "adaptive")
DEFAULT_DECODE = "adaptive"
"""The decoding of ``FaceParser``, ``fpliif parse``, ``fpliif eval`` and the service when none is given
(docs/performance.md says how it was chosen)."""


def is_implicit(model: Any) -> bool:
    """Whether ``model`` has an implicit decoder (``encode``/``decode``: queried at any points, FP-LIIF); dense
    models (SegFace, STN-iCNN) give logits on a pixel grid, ``model(image, size=...)``."""
    return callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))


def default_decode(model: Any) -> str:
    """:data:`DEFAULT_DECODE` for a model with an implicit decoder (``encode``/``decode``); ``"dense"`` for any
    other (a dense model such as SegFace computes every pixel anyway: there are no queries to skip)."""
    return DEFAULT_DECODE if is_implicit(model) else "dense"


COARSE_PER_LATENT = 2
"""The default coarse grid samples each latent cell this many times per axis (:attr:`AdaptiveOptions.min_coarse`)."""
FALLBACK_MIN_COARSE = 64
"""``min_coarse`` when it is not set and the latent grid's size is not known (the bundled model's: 2 x 32)."""
LAST_STEP = 0.75
"""Where halving a side would go below ``min_coarse``, the coarsest level takes ``min_coarse`` itself if that is
at most this share of the side (a step of x1.33 to x2): a 242-pixel window starts at 64 instead of 121
(a quarter of the coarse points). Chosen over 0.6 and 0.9 on real photos and checked against dense on val
images at 192 and 400 (docs/performance.md, "A coarse level at min_coarse")."""


def check_decode_mode(mode: Any, name: str = "decode") -> str:
    """``mode`` if it is ``"dense"`` or ``"adaptive"``, else a ValueError naming ``name``."""
    if mode not in DECODE_MODES:
        raise ValueError(f"{name}: expected 'dense' or 'adaptive', got {mode!r}")
    return str(mode)


@dataclass(frozen=True)
class AdaptiveOptions:
    """Settings of :func:`adaptive_decode`.

    Attributes:
        min_coarse: no side of the coarse grid goes below this many pixels (:func:`level_sizes`). None (default):
            :data:`COARSE_PER_LATENT` times the latent grid's side along that axis (input / 4: 2 x 32 = 64 for
            the bundled model's 128 input), so the coarse grid samples every latent cell twice per axis;
            :data:`FALLBACK_MIN_COARSE` where the latent size is not known. (On the bundled model a coarse grid of
            half the latent side missed parts: 98.5 % of pixels agreed with dense at 128 output. One sample per
            cell agreed on 99.94 % of val pixels but lost whole narrow eyes on real photos: with it, 10 classes
            present in the dense labels of 21 face photos vanished, 9 of them eyes; with two, one, an earring;
            ``scripts/measure_adaptive_parts.py``, docs/performance.md.)
        max_levels: at most this many x2 refinement steps (3: the coarse grid is about output / 8).
        margin: re-query pixels whose upsampled top-2 probability margin ``p1 - p2`` (softmax at the model's
            temperature) is below this. 0.1 (chosen with one coarse sample per latent cell; raising it to 0.3 or
            0.5 did not bring back the narrow eyes that a second sample per cell does): on celebamask-mini images
            (the first 16 by name at 128 output, 6 at 256 and 512, 2 at 1024) the bundled model's labels agreed
            with dense decoding on >= 99.94 % of
            the pixels of every image (mean 99.99 %), decoding 34 / 20 / 14 / 10 % of the dense points; 0.2
            gave >= 99.99 % for 36 / 24 / 19 / 16 %; 0 (label changes only) >= 99.76 % for 18 % at 256.
        radius: re-query pixels within this many pixels (Chebyshev distance) of a label change in the
            upsampled label map.
        passes: extra passes per level that re-query not-yet-queried pixels next to label changes revealed by
            the previous pass.
    """

    min_coarse: int | None = None
    max_levels: int = 3
    margin: float = 0.1
    radius: int = 1
    passes: int = 2

    def __post_init__(self) -> None:
        checks = [
            (
                "min_coarse",
                self.min_coarse is None or (_is_int(self.min_coarse) and self.min_coarse >= 1),
                "None or an integer >= 1",
            ),
            ("max_levels", _is_int(self.max_levels) and self.max_levels >= 0, "an integer >= 0"),
            ("margin", _is_number(self.margin) and 0.0 <= self.margin <= 1.0, "a number in [0, 1]"),
            ("radius", _is_int(self.radius) and self.radius >= 0, "an integer >= 0"),
            ("passes", _is_int(self.passes) and self.passes >= 0, "an integer >= 0"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"adaptive option {name}: expected {what}, got {getattr(self, name)!r}")

    @classmethod
    def of(cls, value: AdaptiveOptions | Mapping[str, Any] | None) -> AdaptiveOptions:
        """Options from None (defaults), an instance, or a mapping of field names (unknown names raise)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise ValueError(f"adaptive options: unknown {unknown}; known: {sorted(cls.__dataclass_fields__)}")
            return cls(**value)
        raise ValueError(f"adaptive options: expected AdaptiveOptions, a dict or None, got {type(value).__name__}")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


@dataclass
class AdaptiveStats:
    """What :func:`adaptive_decode` did: level sizes (coarse to fine) and points decoded per level.

    Points are summed over the batch and include the padding of batched calls (images of a batch with
    fewer uncertain pixels than another are padded with repeats): they are the points the decoder ran.
    """

    size: tuple[int, int]
    batch: int
    levels: list[tuple[int, int]] = field(default_factory=list)
    points: list[int] = field(default_factory=list)
    calls: int = 0

    @property
    def total(self) -> int:
        """Points decoded in all (each runs the per-query MLP once per local-ensemble member)."""
        return int(sum(self.points))

    @property
    def dense(self) -> int:
        """Points dense decoding runs for the same output: batch x H x W."""
        return self.batch * self.size[0] * self.size[1]

    @property
    def fraction(self) -> float:
        return self.total / self.dense

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total, "dense": self.dense, "fraction": self.fraction}


def level_sizes(
    size: tuple[int, int],
    options: AdaptiveOptions | Mapping[str, Any] | None = None,
    latent_size: tuple[int, int] | None = None,
) -> list[tuple[int, int]]:
    """Grid sizes (H, W) from the coarsest to the requested ``size`` (the last entry is ``size`` itself).

    ``latent_size``: the latent grid's (h, w); :data:`COARSE_PER_LATENT` times it is the default ``min_coarse``.
    """
    opts = AdaptiveOptions.of(options)
    if opts.min_coarse is not None:
        min_h = min_w = opts.min_coarse
    elif latent_size is not None:
        min_h, min_w = COARSE_PER_LATENT * int(latent_size[0]), COARSE_PER_LATENT * int(latent_size[1])
    else:
        min_h = min_w = FALLBACK_MIN_COARSE
    levels = [(int(size[0]), int(size[1]))]
    for _ in range(opts.max_levels):
        h, w = levels[0]
        nh, nw = _coarser_side(h, min_h), _coarser_side(w, min_w)
        if (nh, nw) == (h, w):
            break
        levels.insert(0, (nh, nw))
    return levels


def _coarser_side(side: int, min_side: int) -> int:
    """One side of the level below ``side``: its half, or ``min_side`` where the half would be smaller and
    ``min_side`` is at most :data:`LAST_STEP` of ``side``; else ``side`` (no coarser level along this axis)."""
    half = (side + 1) // 2
    if half >= min_side:
        return half
    return min_side if min_side <= LAST_STEP * side else side


def adaptive_decode(
    decode: Callable[[Any], Any],
    size: tuple[int, int],
    batch: int = 1,
    *,
    temperature: float = 1.0,
    options: AdaptiveOptions | Mapping[str, Any] | None = None,
    like: Any = None,
    chunk: int | None = None,
    latent_size: tuple[int, int] | None = None,
    roi: np.ndarray | None = None,
) -> tuple[Any, AdaptiveStats]:
    """Logits (B, H, W, C) at every pixel centre of an H x W grid, by coarse-to-fine querying.

    Args:
        decode: ``decode(coords (B, Q, 2)) -> logits (B, Q, C)``, coordinates (x, y) in [-1, 1] (the model's
            implicit decoder, or e.g. :func:`fpliif.infer.tta.flip_tta_logits` around it).
        size: the output (H, W); the last level is exactly this size.
        batch: B.
        temperature: the model's softmax temperature (for the probability margin).
        options: :class:`AdaptiveOptions` (or a dict of them; None: defaults).
        like: a torch tensor to work in torch on its device; anything else (None, numpy) works in numpy.
        chunk: at most this many points per ``decode`` call (None: one call per step).
        latent_size: the model's latent grid (h, w), which sets the default ``min_coarse`` (:func:`level_sizes`).
        roi: (H, W) bool numpy array of the output pixels that are wanted (None: all). Only the pixels that can
            change them are interpolated, tested and decoded, per level (:func:`roi_levels`); the logits there
            are exactly what decoding without ``roi`` gives, the others are 0 (or, near the wanted ones, may
            differ: a label change beyond the region is not seen there).

    Returns the logits (float32, numpy or torch like ``like``) and :class:`AdaptiveStats`.
    """
    opts = AdaptiveOptions.of(options)
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0 or batch <= 0:
        raise ValueError(f"adaptive_decode: size and batch must be positive, got size {(h, w)}, batch {batch}")
    if chunk is not None and chunk <= 0:
        raise ValueError(f"chunk: must be positive, got {chunk}")
    ops: _Ops = _TorchOps(like) if _is_torch(like) else _NumpyOps()
    stats = AdaptiveStats(size=(h, w), batch=int(batch), levels=level_sizes((h, w), opts, latent_size))

    def run(coords: Any) -> Any:
        q = coords.shape[1]
        step = q if chunk is None else int(chunk)
        outs = []
        for s in range(0, q, step):
            check_deadline()  # stop between passes and chunks once a deadline set by fpliif.limits.scope has passed
            out = ops.float32(decode(coords[:, s : s + step]))
            if out.ndim != 3 or out.shape[:2] != coords[:, s : s + step].shape[:2]:
                raise ValueError(f"decode: expected logits (B, Q, C) for coords {tuple(coords.shape)}, got {out.shape}")
            outs.append(out)
            stats.calls += 1
        return outs[0] if len(outs) == 1 else ops.cat(outs)

    allowed = [None] * len(stats.levels) if roi is None else roi_levels(roi, stats.levels, opts)
    size = stats.levels[0]
    active = ops.active(allowed[0])
    values = _coarse(run, ops, batch, size, active, stats)
    for level, allow in zip(stats.levels[1:], allowed[1:], strict=True):
        grid = ops.expand(values, size, active)
        size, active = level, ops.active(allow)
        values = ops.interp(grid, size, active)
        labels, margin = ops.labels_margin(values, temperature)
        need = ops.nonuniform(labels, size, active, opts.radius) | (margin < opts.margin)
        done = need
        points = 0
        for p in range(opts.passes + 1):
            rows, counts = ops.select(need)
            if rows is None:
                break
            out = run(ops.coords_at(ops.pixels(rows, active), *size))
            ops.scatter(values, rows, counts, out)
            points += batch * rows.shape[1]
            if p == opts.passes:
                break
            ops.scatter(labels, rows, counts, ops.argmax(out))  # only the re-queried pixels' labels change
            need = ops.nonuniform(labels, size, active, opts.radius) & ~done
            done = done | need
        stats.points.append(points)
    return ops.expand(values, size, active), stats


def _coarse(
    run: Callable[[Any], Any], ops: _Ops, batch: int, size: tuple[int, int], active: Any, stats: AdaptiveStats
) -> Any:
    """(B, n, C) logits of the coarse level at its ``active`` pixels (:meth:`_Ops.active`; None: all of them)."""
    h, w = size
    if active is None:
        stats.points.append(batch * h * w)
        return run(ops.coords_at(ops.all_indices(batch, h * w), h, w))
    if len(active) == 0:  # nothing wanted: one point tells the number of classes
        stats.points.append(batch)
        return run(ops.coords_at(ops.all_indices(batch, 1), h, w))[:, :0]
    stats.points.append(batch * len(active))
    return run(ops.coords_at(ops.pixels(ops.all_indices(batch, len(active)), active), h, w))


def roi_levels(
    roi: np.ndarray, levels: list[tuple[int, int]], options: AdaptiveOptions | Mapping[str, Any] | None = None
) -> list[np.ndarray]:
    """Per level of :func:`adaptive_decode` (coarse to fine), the (h, w) bool pixels it may decode so that the
    wanted output pixels ``roi`` (H, W) get exactly the logits of decoding without a region: at each level the
    pixels within ``radius * (passes + 1)`` of the wanted ones (whether a pixel is re-queried depends on the labels
    that far away), and at the level below the bilinear taps of those (the coarse level: only the taps)."""
    opts = AdaptiveOptions.of(options)
    roi = np.asarray(roi, bool)
    if roi.shape != tuple(levels[-1]):
        raise ValueError(f"roi: expected a bool mask of the output size {tuple(levels[-1])}, got shape {roi.shape}")
    reach = opts.radius * (opts.passes + 1)
    wanted = roi
    out: list[np.ndarray] = []
    for k in range(len(levels) - 1, -1, -1):
        wanted = _dilate(wanted, reach) if k > 0 else wanted
        out.insert(0, wanted)
        if k > 0:
            wanted = _taps(wanted, levels[k - 1])
    return out


def _dilate(mask: np.ndarray, d: int) -> np.ndarray:
    """``mask`` grown by ``d`` pixels (Chebyshev distance)."""
    if d <= 0 or not mask.any():
        return mask
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * d + 1, 2 * d + 1), np.uint8)).astype(bool)


def _taps(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixels of the ``size`` grid whose logits the bilinear upsampling (:meth:`_NumpyOps.resize`) to ``mask``'s
    grid reads at ``mask``'s pixels."""

    def tap_matrix(n_src: int, n_dst: int) -> np.ndarray:
        src = np.clip((np.arange(n_dst) + 0.5) * (n_src / n_dst) - 0.5, 0, n_src - 1)
        i0 = np.floor(src).astype(np.int64)
        m = np.zeros((n_src, n_dst), np.float32)
        m[i0, np.arange(n_dst)] = 1
        m[np.minimum(i0 + 1, n_src - 1), np.arange(n_dst)] = 1
        return m

    rows = tap_matrix(size[0], mask.shape[0])
    cols = tap_matrix(size[1], mask.shape[1])
    return (rows @ mask.astype(np.float32) @ cols.T) > 0


# ---------------------------------------------------------------------------------------------- array ops
def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


class _Ops:
    """The few array operations :func:`adaptive_decode` needs, for numpy or torch.

    A level's logits are kept only at its *active* pixels: the flat indices (n,) of the pixels its region allows
    (:meth:`active`), or None for all of them; ``values`` (B, n, C), ``labels``/``need`` (B, n) follow that order.
    """

    def active(self, allow: np.ndarray | None) -> Any: ...
    def pixels(self, rows: Any, active: Any) -> Any: ...
    def all_indices(self, batch: int, n: int) -> Any: ...
    def coords_at(self, idx: Any, h: int, w: int) -> Any: ...
    def float32(self, x: Any) -> Any: ...
    def cat(self, xs: list[Any]) -> Any: ...
    def expand(self, values: Any, size: tuple[int, int], active: Any) -> Any: ...
    def interp(self, grid: Any, size: tuple[int, int], active: Any) -> Any: ...
    def labels_margin(self, values: Any, temperature: float) -> tuple[Any, Any]: ...
    def argmax(self, values: Any) -> Any: ...
    def nonuniform(self, labels: Any, size: tuple[int, int], active: Any, radius: int) -> Any: ...
    def select(self, need: Any) -> tuple[Any, list[int]]: ...
    def scatter(self, values: Any, rows: Any, counts: list[int], new: Any) -> None: ...


DENSE_SHARE = 0.4
""":meth:`_NumpyOps.interp` resamples the bounding box of the active pixels as a whole when they fill at least this
share of it (cheaper than four gathers per pixel there; the same values either way)."""


class _NumpyOps(_Ops):
    def active(self, allow: np.ndarray | None) -> np.ndarray | None:
        return None if allow is None else np.flatnonzero(allow)

    def pixels(self, rows: np.ndarray, active: np.ndarray | None) -> np.ndarray:
        return rows if active is None else active[rows]

    def all_indices(self, batch: int, n: int) -> np.ndarray:
        return np.broadcast_to(np.arange(n, dtype=np.int64), (batch, n))

    def coords_at(self, idx: np.ndarray, h: int, w: int) -> np.ndarray:
        from .infer.geometry import index_coords  # the arithmetic of fpliif.models.pixel_centers

        return index_coords(idx, h, w)

    def float32(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def cat(self, xs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(xs, axis=1)

    def expand(self, values: np.ndarray, size: tuple[int, int], active: np.ndarray | None) -> np.ndarray:
        b, _, c = values.shape
        if active is None:
            return values.reshape(b, *size, c)
        out = np.zeros((b, size[0] * size[1], c), np.float32)
        out[:, active] = values
        return out.reshape(b, *size, c)

    def interp(self, grid: np.ndarray, size: tuple[int, int], active: np.ndarray | None) -> np.ndarray:
        """Bilinear upsampling (``align_corners=False``) of (B, h, w, C) ``grid`` at the active pixels of ``size``:
        the values of :func:`~fpliif.infer.geometry.bilinear_rows_cols` over the whole grid."""
        from .infer.geometry import bilinear_points, bilinear_rows_cols

        (sh, sw), (h, w), c = grid.shape[1:3], size, grid.shape[-1]
        src_y = (np.arange(h) + 0.5) * (sh / h) - 0.5
        src_x = (np.arange(w) + 0.5) * (sw / w) - 0.5
        if active is None:
            return _stack([bilinear_rows_cols(g, src_y, src_x).reshape(h * w, c) for g in grid])
        rows, cols = np.divmod(active, w)
        if not len(active):
            return np.zeros((grid.shape[0], 0, c), np.float32)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        if len(active) < DENSE_SHARE * (r1 - r0) * (c1 - c0):
            return _stack([bilinear_points(g, src_y[rows], src_x[cols], rows_first=True) for g in grid])
        at = (rows - r0) * (c1 - c0) + (cols - c0)
        return _stack([bilinear_rows_cols(g, src_y[r0:r1], src_x[c0:c1]).reshape(-1, c)[at] for g in grid])

    def labels_margin(self, values: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
        """Labels and top-2 probability margins: the values of :func:`~fpliif.infer.geometry.softmax` and its two
        largest entries, without dividing every entry (the largest is ``1 / sum``, the second ``e2 / sum``), each
        pixel's classes reduced as contiguous rows (:func:`~fpliif.infer.geometry.channels_first`)."""
        from .infer.geometry import argmax_first, channels_first, max_first, sum_first

        labels = np.empty(values.shape[:2], np.intp)
        margin = np.empty(values.shape[:2], np.float32)
        for b, v in enumerate(values):
            x = channels_first(v)
            top = max_first(x)
            labels[b] = argmax_first(x, top)
            x /= np.float32(temperature)
            x -= max_first(x)  # x at the label (division keeps the order)
            np.exp(x, out=x)
            total = sum_first(x)
            x[labels[b], np.arange(x.shape[1])] = -1
            margin[b] = np.float32(1) / total - max_first(x) / total
        return labels, margin

    def argmax(self, values: np.ndarray) -> np.ndarray:
        return values.argmax(axis=-1)

    def nonuniform(
        self, labels: np.ndarray, size: tuple[int, int], active: np.ndarray | None, radius: int
    ) -> np.ndarray:
        """Whether another label lies within ``radius`` (Chebyshev) among the active pixels (a min/max filter;
        pixels outside the grid or not active do not count)."""
        if radius == 0 or labels.size == 0:
            return np.zeros(labels.shape, bool)
        import cv2

        dtype = np.uint8 if labels.max() < 256 else np.float32
        kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
        out = np.empty(labels.shape, bool)
        for b, lab in enumerate(labels.astype(dtype)):
            if active is None:
                hi = lo = lab
            else:  # elsewhere neutral values: 0 never raises a maximum, the dtype's largest never lowers a minimum
                hi = np.zeros(size[0] * size[1], dtype)
                lo = np.full(size[0] * size[1], 255 if dtype == np.uint8 else np.inf, dtype)
                hi[active] = lo[active] = lab
            differ = (cv2.dilate(hi.reshape(size), kernel) != cv2.erode(lo.reshape(size), kernel)).ravel()
            out[b] = differ if active is None else differ[active]
        return out

    def select(self, need: np.ndarray) -> tuple[np.ndarray | None, list[int]]:
        rows = [np.flatnonzero(n) for n in need]
        counts = [len(r) for r in rows]
        q = max(counts)
        if q == 0:
            return None, counts
        idx = np.stack([np.pad(r, (0, q - len(r)), mode="edge") if len(r) else np.zeros(q, np.int64) for r in rows])
        return idx.astype(np.int64, copy=False), counts

    def scatter(self, values: np.ndarray, rows: np.ndarray, counts: list[int], new: np.ndarray) -> None:
        for b, n in enumerate(counts):
            values[b, rows[b, :n]] = new[b, :n]


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """``np.stack``, without a copy for one array."""
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


class _TorchOps(_Ops):
    def __init__(self, like: Any):
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        self.device = like.device

    def active(self, allow: np.ndarray | None) -> Any:
        return None if allow is None else self.torch.from_numpy(np.flatnonzero(allow)).to(self.device)

    def pixels(self, rows: Any, active: Any) -> Any:
        return rows if active is None else active[rows]

    def all_indices(self, batch: int, n: int) -> Any:
        return self.torch.arange(n, device=self.device).expand(batch, n)

    def coords_at(self, idx: Any, h: int, w: int) -> Any:
        t = self.torch
        y = (t.div(idx, w, rounding_mode="floor").to(t.float64) * 2 + 1) / h - 1
        x = ((idx % w).to(t.float64) * 2 + 1) / w - 1
        return t.stack([x, y], dim=-1).to(t.float32)

    def float32(self, x: Any) -> Any:
        return x.float()

    def cat(self, xs: list[Any]) -> Any:
        return self.torch.cat(xs, dim=1)

    def expand(self, values: Any, size: tuple[int, int], active: Any) -> Any:
        b, _, c = values.shape
        if active is None:
            return values.reshape(b, *size, c)
        out = self.torch.zeros((b, size[0] * size[1], c), dtype=self.torch.float32, device=self.device)
        out[:, active] = values
        return out.reshape(b, *size, c)

    def interp(self, grid: Any, size: tuple[int, int], active: Any) -> Any:
        out = self.F.interpolate(grid.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
        flat = out.permute(0, 2, 3, 1).reshape(grid.shape[0], size[0] * size[1], -1)
        return flat.contiguous() if active is None else flat[:, active]

    def labels_margin(self, values: Any, temperature: float) -> tuple[Any, Any]:
        top2 = self.torch.softmax(values / temperature, dim=-1).topk(2, dim=-1).values
        return values.argmax(dim=-1), top2[..., 0] - top2[..., 1]

    def argmax(self, values: Any) -> Any:
        return values.argmax(dim=-1)

    def nonuniform(self, labels: Any, size: tuple[int, int], active: Any, radius: int) -> Any:
        t = self.torch
        if radius == 0 or labels.numel() == 0:
            return t.zeros(labels.shape, dtype=t.bool, device=labels.device)
        b, k = labels.shape[0], 2 * radius + 1
        hi = lo = labels.float()  # class indices are exact in float32; max_pool2d pads with -inf (ignored)
        if active is not None:  # pixels that are not active are ignored too
            hi = t.full((b, size[0] * size[1]), -t.inf, device=labels.device).index_copy(1, active, hi)
            lo = t.full((b, size[0] * size[1]), t.inf, device=labels.device).index_copy(1, active, lo)
        top = self.F.max_pool2d(hi.view(b, 1, *size), k, stride=1, padding=radius)
        bottom = -self.F.max_pool2d(-lo.view(b, 1, *size), k, stride=1, padding=radius)
        differ = (top != bottom).view(b, -1)
        return differ if active is None else differ[:, active]

    def select(self, need: Any) -> tuple[Any, list[int]]:
        t = self.torch
        counts = need.sum(dim=1).tolist()
        q = max(counts)
        if q == 0:
            return None, counts
        # indices of the marked pixels first, in increasing order; rows with fewer repeat their first
        order = t.argsort(need.to(t.uint8), dim=1, descending=True, stable=True)[:, :q]
        valid = t.arange(q, device=need.device) < t.tensor(counts, device=need.device)[:, None]
        return t.where(valid, order, order[:, :1]), counts

    def scatter(self, values: Any, rows: Any, counts: list[int], new: Any) -> None:
        for b, n in enumerate(counts):
            if n:
                values[b, rows[b, :n]] = new[b, :n].to(values.dtype)
