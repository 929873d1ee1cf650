"""``FaceParser``: per-pixel face-part labels for aligned crops and in-the-wild photos.

    from fpliif import FaceParser

    parser = FaceParser.from_pretrained()            # bundled weights (or a path / bundled name)
    result = parser("photo.jpg")                     # detect faces, crop, parse, paste back
    result.labels                                    # (H, W) uint8, original resolution
    result.overlay(0.5).save("overlay.png"); result.save_png("labels.png")
    parser.parse_aligned(crop, size=512)             # a CelebAMask-HQ-style crop, any output size
    parser(photo, tta=True)                          # flip test-time augmentation (also FaceParser(tta=True))
    parser(photo, decode="adaptive")                 # coarse-to-fine querying (also FaceParser(decode=...))

Pipeline for photos: detect faces (MTCNN with 5 landmarks by default, OpenCV Haar cascades as a fallback,
pluggable; :mod:`fpliif.infer.detect`), cut a square window around each face with the framing measured on
CelebAMask-HQ (:mod:`fpliif.infer.framing`), rolled so that the eyes are level when the detector gives
landmarks (``align``), resize it to the model's input size, and decode the implicit model directly at the
crop coordinates of the original image pixels inside the window (:mod:`fpliif.infer.geometry`): the inverse
of the crop's similarity transform, without resampling labels. Where windows overlap, the more confident
face wins per pixel; pixels outside every window are background. With ``tta`` the mirrored crop is parsed
too and the probabilities averaged (:mod:`fpliif.infer.tta`). With ``decode="adaptive"`` the decoder is
queried densely on a coarse grid and then only where the prediction is uncertain (:mod:`fpliif.adaptive`).

This module imports torch only for a PyTorch model or torch tensor inputs; with an
:class:`~fpliif.infer.onnx_backend.OnnxModel` it runs on onnxruntime + numpy + OpenCV + Pillow.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .. import limits
from ..adaptive import DEFAULT_DECODE, AdaptiveOptions, adaptive_decode, check_decode_mode
from ..models.checkpoint import DEFAULT_INPUT_SIZE, MAX_INPUT_SIZE, MIN_INPUT_SIZE
from ..precision import DEFAULT_INFERENCE_AMP
from ..validate import MAX_THREADS, check_int, check_size
from .detect import (
    AnyOrientation,
    HaarDetector,
    SecondChance,
    check_box_fits,
    check_boxes,
    detection,
    make_detector,
    nose_point,
    parse_check,
    parse_evidence,
    quarter_turn,
    roll_degrees,
)
from .framing import (
    BELOW_CLASSES,
    BELOW_CONTINUED,
    CONTEXT_CLASSES,
    CONTEXT_FEATHER,
    CONTEXT_SCALE,
    DEFAULT_FRAMING,
    EXTEND_CLASSES,
    Framing,
    lower_window,
)
from .geometry import (
    CONTEXT_LEVEL,
    FACE_LEVEL,
    Canvas,
    Window,
    bilinear_points,
    channels_first,
    detached,
    extract_crop,
    feather_weights,
    grid_coords,
    grid_positions,
    index_coords,
    mark_taps,
    model_input,
    resize_rgb,
    softmax_first,
    strips,
)
from .images import as_images
from .result import Face, ParseResult
from .tta import flip_channels, flip_tta_logits, mirror_images

log = logging.getLogger("fpliif.infer")

NO_FACE_MESSAGE = "no face detected"
POINTS_HINT = "raise it with --max-points or FaceParser(max_points=...); 0: no limit"


PIXEL_BLOCK = 16384
"""Pixels of a photo sampled, softmaxed and pasted in one strip: 16384 x 19 float32 logits are 1.2 MiB, which stay in
a core's cache through the strip's numpy passes. On the dev CPU the 512² portrait took 1.27 -> 1.12 s (fp32) and
1.10 -> 0.91 s (bf16) against strips of ``max_queries`` (262144) pixels, with the same labels
(docs/performance.md, "Query blocks")."""

CONTEXT_GRID_SCALE = 2
"""Adaptive decoding queries a context window (and a lower context window) on a crop grid of at most this many times
the model's input side (256 for the bundled 128² model), sampled bilinearly at the photo's pixels (the face window:
:data:`FACE_GRID_SCALE`). Those windows label only large regions (:data:`~fpliif.infer.framing.CONTEXT_CLASSES`) from a
latent of the input's resolution. 512² portrait, bf16, one thread: the context window's 6.9 k queries -> 3.9 k; on 48
val photos 99.97 % of the labels as before and mean F1 unchanged (docs/performance.md, "Session 10: context windows
on a coarser grid"). ``decode="dense"`` is not capped; ``math.inf``: no cap."""

SECOND_CHANCE_SIZE = 64
"""Output side at which ``FaceParser(second_chance=True)`` parses a candidate face to check it (docs/detection.md,
"Second chances for missed faces")."""

FACE_GRID_SCALE = 2
"""Adaptive decoding queries a face window on a crop grid of at most this many times the model's input side (256 for
the bundled 128² model), sampled bilinearly at the photo's pixels, like :data:`CONTEXT_GRID_SCALE`; smaller windows
keep their own pixels. On 48 val photos (face windows of 480-585 px) mean F1 77.71 -> 77.58 (dense 77.68), 99.81 %
of the labels as dense, the photo path's CPU time 0.71 -> 0.49 s (docs/performance.md, "Session 11").
``decode="dense"`` is not capped; ``math.inf``: no cap (up to ``max_decode_size``)."""


class _Source(NamedTuple):
    """A window to query: its latents (and mirrored latents or None), and its logits on a crop grid or None."""

    z: Any
    zm: Any
    win: Window
    grid: np.ndarray | None


class _Job(NamedTuple):
    """One face to parse: its image's index, detection, window, context window and lower context window (or
    None: no context)."""

    image: int
    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None
    win: Window
    ctx: Window | None
    low: Window | None = None


INT_OPTIONS: dict[str, tuple[int, int | None, bool]] = {
    "batch_size": (1, None, False),
    "input_size": (MIN_INPUT_SIZE, MAX_INPUT_SIZE, True),
    "max_decode_size": (8, None, True),
    "threads": (1, MAX_THREADS, True),
    "max_queries": (1, None, False),
}
"""The integer arguments of :class:`FaceParser`: (lowest, highest or None, whether None is accepted)."""


def check_int_options(**values: Any) -> dict[str, int | None]:
    """Those of ``values`` that are :data:`INT_OPTIONS`, checked (others are left out); ValueError naming the
    argument for a value of the wrong type or out of range (``threads=-1``, ``batch_size=0``, ``input_size=0``)."""
    return {k: check_int(v, k, *INT_OPTIONS[k]) for k, v in values.items() if k in INT_OPTIONS}


def check_context(context: Any) -> float:
    """The ``context`` option as a window scale: True -> :data:`~fpliif.infer.framing.CONTEXT_SCALE`, False /
    None / 0 -> 0.0 (off), or a number in (1, 4]; ValueError naming ``context`` otherwise."""
    if context is None or context is False:
        return 0.0
    if context is True:
        return CONTEXT_SCALE
    if isinstance(context, (int, float, np.integer, np.floating)) and (context == 0 or 1 < context <= 4):
        return float(context)
    raise ValueError(f"context: expected True, False or a window scale in (1, 4], got {context!r}")


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a bool; TypeError naming ``name`` unless it is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def check_feather(feather: Any) -> float:
    """The ``feather`` option: a number in [0, 1]; ValueError naming ``feather`` otherwise."""
    ok = isinstance(feather, (int, float, np.integer, np.floating)) and not isinstance(feather, bool)
    if not ok or not 0 <= feather <= 1:
        raise ValueError(f"feather: expected a band width in [0, 1] (half-sides of the face window), got {feather!r}")
    return float(feather)


class FaceParser:
    """Face parsing for photos (with detection) and aligned crops (without).

    Args:
        model: any registered PyTorch model (FP-LIIF, SegFace, STN-iCNN, ...), an
            :class:`~fpliif.infer.onnx_backend.OnnxModel`, or a path (``.onnx`` or ``.safetensors``). A model
            with an implicit decoder (``encode``/``decode``) is queried at the output pixels; a dense model gives
            its logits at ``input_size``, resampled bilinearly there (:mod:`fpliif.infer.torch_backend`).
        detector: ``"mtcnn"`` (default: :class:`~fpliif.infer.detect.MTCNNDetector`, boxes + 5 landmarks),
            ``"haar"`` (:class:`~fpliif.infer.detect.HaarDetector`) or any callable ``(H, W, 3) uint8 RGB ->
            [(box, score) or (box, score, landmarks), ...]``.
        framing: face box -> crop window constants (default: the detector's ``framing`` attribute, else
            :data:`~fpliif.infer.framing.DEFAULT_FRAMING`, measured for MTCNN). Boxes passed to a call are
            framed the same way.
        align: roll each crop so that the eyes are level when the detection has landmarks (default True);
            labels are pasted back through the inverse rotation.
        device: ``"cpu"`` or ``"cuda"``.
        batch_size: face crops encoded at once.
        input_size: side of the square model input (default: the weights' ``input_size`` metadata, else
            :data:`~fpliif.models.checkpoint.DEFAULT_INPUT_SIZE`).
        max_decode_size: crops larger than this (in original pixels) are decoded on a grid of this size and
            the logits resampled bilinearly to the original pixels (bounds the cost on huge photos); None
            decodes every original pixel.
        threads: CPU threads for torch / onnxruntime (default: the library's choice).
        decode_threads: torch threads of a photo's adaptive decoding stage (after encoding; dense decoding and
            ``parse_aligned`` keep ``threads``: their large decoder calls gain from more); ``"auto"`` (default): one
            on a CPU where torch uses at most two threads (faster there in every precision), else ``threads``
            (:meth:`~fpliif.infer.torch_backend.TorchBackend.decoder_threads`).
        pad: how crop windows reaching outside the photo are filled: ``"edge"`` (replicate) or ``"zero"``.
        max_queries: pixels decoded per call (bounds memory).
        tta: flip test-time augmentation by default (each call may override it): parse the crop and its
            horizontal mirror and average their probabilities, left/right classes swapped back (2x the cost).
        decode: ``"dense"`` (every output pixel) or ``"adaptive"`` (coarse to fine, re-querying only uncertain
            pixels; :func:`fpliif.adaptive.adaptive_decode`; implicit models only); default (None): adaptive for an
            implicit model, dense for a dense one (:func:`fpliif.adaptive.default_decode`); each call may override it.
        adaptive: :class:`~fpliif.adaptive.AdaptiveOptions` (or a dict of them) for ``decode="adaptive"``.
        amp: precision of the torch backend: ``"auto"`` (default, :data:`~fpliif.precision.DEFAULT_INFERENCE_AMP`:
            bf16 where the CPU/GPU computes it natively, else fp32), ``"none"`` (fp32 on every machine), ``"bf16"``
            (autocast) or ``"int8"``; see docs/performance.md.
        max_pixels: largest image (checked from a file's header before decoding) and largest ``parse_aligned``
            output, in pixels (default: :data:`fpliif.limits.DEFAULT_MAX_PIXELS` or ``$FPLIIF_MAX_PIXELS``;
            0: no limit); beyond it :class:`~fpliif.limits.TooManyPixels` (a ValueError) is raised.
        max_points: most decoder queries per image (each face's decoded pixels and its context windows', twice
            with ``tta``), checked before decoding (default :data:`fpliif.limits.DEFAULT_MAX_POINTS`; 0: no
            limit); beyond it :class:`~fpliif.limits.OverBudget` (a ValueError). :func:`fpliif.limits.scope` may
            override it and set a deadline.
        context: label hair, hat, neck and clothes beyond each face window from a second, wider window (default
            True: :data:`~fpliif.infer.framing.CONTEXT_SCALE` times the face window, same centre and roll; a
            number in (1, 4] sets the scale; False: labels end at the face window). Its labels are used only
            outside the face window and only for :data:`~fpliif.infer.framing.CONTEXT_CLASSES` (and blended into
            the face window's in its outer band, ``feather``); any face window's labels beat them. Below it, where
            the photo goes on, a lower context window (:func:`~fpliif.infer.framing.lower_window`) labels the
            body: :data:`~fpliif.infer.framing.BELOW_CLASSES`, and hair under the context window's hair. Each costs
            one more encoder pass, and their decoder queries count against ``max_points``; each call may override
            it. See docs/detection.md.
        feather: with a context window, the width (in half-sides of the face window) of the face window's outer
            band where its probabilities are blended into the context window's (default
            :data:`~fpliif.infer.framing.CONTEXT_FEATHER`; 0: a hard switch at the window's edge).
        drop_detached: photos only: labelled regions (8-connected, all classes together) that reach no face,
            i.e. hold no pixel of an inner face class (skin, nose, eyes, brows, lips, mouth, glasses: the classes
            outside :data:`~fpliif.infer.framing.CONTEXT_CLASSES`) inside a face's detection box, become
            background, in the image's labels and each face's (blobs of "hair" or "cloth" on a wall or a curtain
            beside the person). False: keep every label.
        second_chance: with the MTCNN detector: a second, wider detection pass (lower thresholds, smaller faces,
            the mirrored photo) whose new faces are kept only where this parser sees a nose and another face part
            in them (:class:`~fpliif.infer.detect.SecondChance`): more turned, rolled and small faces, no false box
            added in the measurements, about 4x the detection time (docs/detection.md). Default False.
        any_orientation: also find faces turned on their side or upside down (a photo whose EXIF orientation is
            missing or wrong): the detector (with ``second_chance``, its second pass too) runs on the photo and on
            its three quarter turns, one detection kept per face (:class:`~fpliif.infer.detect.AnyOrientation`), and
            each crop is turned upright by its landmarks (with ``align=False``: by the nearest quarter turn only).
            Needs a detector with landmarks (not Haar); about 4x the detection time (docs/detection.md). Default
            False.
        extend: photos with context only: continue clothes, hair and neck (:data:`~fpliif.infer.framing.EXTEND_CLASSES`)
            past the context windows' outer edge where the photo goes on, by GrabCut seeded with the parser's own labels
            (:func:`fpliif.infer.extend.extend_labels`; one-hot probabilities there). False: labels end at the windows.
    """

    def __init__(
        self,
        model: Any,
        detector: Any = None,
        framing: Framing | None = None,
        device: str = "cpu",
        batch_size: int = 8,
        input_size: int | None = None,
        max_decode_size: int | None = 512,
        threads: int | None = None,
        pad: str = "edge",
        max_queries: int = 262144,
        tta: bool = False,
        decode: str | None = None,
        adaptive: AdaptiveOptions | dict[str, Any] | None = None,
        align: bool = True,
        max_pixels: int | None = None,
        max_points: int | None = None,
        amp: str = DEFAULT_INFERENCE_AMP,
        context: bool | float = True,
        feather: float = CONTEXT_FEATHER,
        drop_detached: bool = True,
        extend: bool = True,
        second_chance: bool = False,
        decode_threads: int | str = "auto",
        any_orientation: bool = False,
    ):
        ints = check_int_options(
            batch_size=batch_size,
            input_size=input_size,
            max_decode_size=max_decode_size,
            threads=threads,
            max_queries=max_queries,
        )
        if isinstance(model, (str, Path)):
            model = _load_model(model, device=device, threads=threads)
        from .onnx_backend import OnnxModel

        if isinstance(model, OnnxModel):
            if amp not in ("none", "auto"):
                raise ValueError(f"amp: the onnxruntime backend runs its graph in fp32, got amp={amp!r}")
            if decode_threads != "auto":
                raise ValueError("decode_threads: the onnxruntime backend keeps its session's threads (threads=...)")
            self.backend: Any = _OnnxBackend(model)
        else:
            from .torch_backend import TorchBackend

            self.backend = TorchBackend(model, device=device, threads=threads, amp=amp, decode_threads=decode_threads)
        if pad not in ("edge", "zero"):
            raise ValueError(f"pad: expected 'edge' or 'zero', got {pad!r}")
        self.model = model
        self.detector = make_detector(detector) if isinstance(detector, str) else detector
        self._framing = framing
        self.align = bool(align)
        self.batch_size = ints["batch_size"]
        self.input_size = int(ints["input_size"] or self.backend.input_size or DEFAULT_INPUT_SIZE)
        self.max_decode_size = ints["max_decode_size"]
        self.pad = pad
        self.max_queries = ints["max_queries"]
        self.tta = check_flag(tta, "tta")
        self.decode = self._decode_mode(decode, DEFAULT_DECODE if self.implicit else "dense")
        self.adaptive = AdaptiveOptions.of(adaptive)
        self.max_pixels = limits.resolve_limit(max_pixels, "max_pixels", limits.default_max_pixels)
        self.max_points = limits.resolve_limit(max_points, "max_points", limits.DEFAULT_MAX_POINTS)
        self.points_decoded = 0  # query points decoded so far (flip TTA decodes each twice: crop and mirror)
        self._flip_channels = flip_channels(self.backend.label_set)
        self.context = check_context(context)
        self.feather = check_feather(feather)
        self.drop_detached = check_flag(drop_detached, "drop_detached")
        self.extend = check_flag(extend, "extend")
        self.second_chance = second_chance
        self.any_orientation = any_orientation
        self._second: Any = None
        self._turns: Any = None
        names = self.backend.label_set.classes
        self._context_classes = np.array([k == 0 or c in CONTEXT_CLASSES for k, c in enumerate(names)])
        self._below_classes = np.array([k == 0 or c in BELOW_CLASSES for k, c in enumerate(names)])
        self._continued = np.array([c in BELOW_CONTINUED for c in names])
        self._seed_classes = ~self._context_classes  # skin, nose, eyes...: see face_seeds
        self._extend_classes = [names.index(c) for c in EXTEND_CLASSES if c in names]

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, weights: str | Path | None = None, device: str = "cpu", **kwargs: Any) -> FaceParser:
        """Load the bundled default weights (None), a bundled name, a ``.safetensors`` or ``.onnx`` file."""
        threads = check_int_options(**kwargs).get("threads")  # bad arguments refused before loading anything
        return cls(_load_model(weights, device=device, threads=threads), device=device, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, device: str = "cpu", **kwargs: Any) -> FaceParser:
        """Parser on onnxruntime for a file written by ``fpliif export onnx`` (no torch needed)."""
        threads = check_int_options(**kwargs).get("threads")  # bad arguments refused before loading anything
        from .onnx_backend import OnnxModel

        return cls(OnnxModel(path, device=device, threads=threads), device=device, **kwargs)

    @property
    def label_set(self):
        return self.backend.label_set

    @property
    def classes(self) -> tuple[str, ...]:
        return self.backend.label_set.classes

    def __repr__(self) -> str:
        return (
            f"FaceParser(backend={self.backend.name}, classes={len(self.classes)}, "
            f"input_size={self.input_size}, tta={self.tta}, decode={self.decode!r}, "
            f"detector={self.detector!r}, framing={self.framing}, align={self.align}, context={self.context})"
        )

    @property
    def framing(self) -> Framing:
        """Face box -> crop window constants: the given ones, else the detector's, else the default."""
        if self._framing is not None:
            return self._framing
        own = getattr(self.detector, "framing", None)
        return own if isinstance(own, Framing) else DEFAULT_FRAMING

    @framing.setter
    def framing(self, value: Framing | None) -> None:
        self._framing = value

    # ------------------------------------------------------------------------------------------ detection
    @property
    def second_chance(self) -> bool:
        """Whether detection adds the checked second MTCNN pass (see the class's ``second_chance``)."""
        return self._second_chance

    @second_chance.setter
    def second_chance(self, value: bool) -> None:
        value = check_flag(value, "second_chance")
        if value and not (self.detector is None or callable(getattr(self.detector, "candidates", None))):
            raise ValueError(f"second_chance: needs the MTCNN detector, got {type(self.detector).__name__}")
        self._second_chance = value

    @property
    def any_orientation(self) -> bool:
        """Whether detection also looks for faces turned by quarter turns (see the class's ``any_orientation``)."""
        return self._any_orientation

    @any_orientation.setter
    def any_orientation(self, value: bool) -> None:
        value = check_flag(value, "any_orientation")
        if value and isinstance(self.detector, HaarDetector):
            raise ValueError(
                "any_orientation: needs a detector with landmarks (MTCNN) to turn a face upright, got HaarDetector"
            )
        self._any_orientation = value

    def detect(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float, np.ndarray | None]]:
        """Faces ``[((x1, y1, x2, y2), score, landmarks or None), ...]`` of an (H, W, 3) uint8 RGB image
        (landmarks: (5, 2) float32, :data:`~fpliif.infer.detect.LANDMARKS`); can be passed back as ``boxes``."""
        return [detection(d, "detector") for d in self._detector()(image)]

    def _detector(self) -> Any:
        """The detector (MTCNN unless one was given), wrapped in a checked second pass with ``second_chance`` and in
        its quarter turns with ``any_orientation``."""
        if self.detector is None:
            self.detector = make_detector("mtcnn")
        found = self.detector
        if self.second_chance:
            if self._second is None or self._second.detector is not found:
                self._second = SecondChance(found, parse_check(self._face_parts, self.classes, self.framing))
            found = self._second
        if self.any_orientation:
            if self._turns is None or self._turns.detector is not found:
                self._turns = AnyOrientation(found, parse_evidence(self._face_parts, self.classes, self.framing))
            found = self._turns
        return found

    def _face_parts(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and confidence of an aligned crop at :data:`SECOND_CHANCE_SIZE` (the checks of the second pass and
        of turned faces)."""
        result = self.parse_aligned(crop, size=SECOND_CHANCE_SIZE, return_probs=True, tta=False)
        return result.labels, result.confidence

    def windows(self, image: Any, boxes: Any = None, context: bool | float | None = None) -> list[tuple[Window, Any]]:
        """Where one photo would be parsed, without parsing it: per face, its crop :class:`Window` and its context
        window (None without context), as :meth:`__call__` frames them (``boxes``, ``context``: as there)."""
        scale = self.context if context is None else check_context(context)
        items, single = as_images(image, limits.effective("max_pixels", self.max_pixels))
        if not single:
            raise ValueError("image: windows() takes one photo")
        jobs, _ = self._plan(items, check_boxes(boxes, 1, True), scale)
        return [(j.win, j.ctx) for j in jobs]

    # ------------------------------------------------------------------------------------------ photos
    def __call__(
        self,
        images: Any,
        boxes: Any = None,
        return_probs: bool = False,
        tta: bool | None = None,
        decode: str | None = None,
        context: bool | float | None = None,
        feather: float | None = None,
        drop_detached: bool | None = None,
        extend: bool | None = None,
    ) -> ParseResult | list[ParseResult]:
        """Parse photo(s): a path, PIL image, (H, W, 3) uint8 RGB array, torch tensor (3, H, W) /
        (B, 3, H, W) (float in [0, 1] or uint8), or a list of these.

        ``boxes``: face boxes [x1, y1, x2, y2] to use instead of the detector (for one image: a list of
        boxes, ``(box, score)`` pairs or ``(box, score, landmarks)`` as :meth:`detect` returns; for a list of
        images: one list (or None = detect) per image). ``tta``: flip test-time
        augmentation (default: the parser's ``tta``). ``decode``: ``"dense"`` or ``"adaptive"`` (default: the
        parser's ``decode``). ``context``: label beyond each face window from a wider one (default: the parser's
        ``context``). ``feather``: the band where the face window is blended into the context window (default: the
        parser's ``feather``). ``drop_detached``: labels that reach no face become background (default: the
        parser's ``drop_detached``). ``extend``: continue clothes, hair and neck past the context windows (default:
        the parser's ``extend``). Returns one :class:`ParseResult` for a single image, else a list.
        """
        decode = self._decode_mode(decode)
        scale = self.context if context is None else check_context(context)
        band = self.feather if feather is None else check_feather(feather)
        items, single = as_images(images, limits.effective("max_pixels", self.max_pixels))
        per_image_boxes = check_boxes(boxes, len(items), single)
        tta = self.tta if tta is None else check_flag(tta, "tta")
        drop = self.drop_detached if drop_detached is None else check_flag(drop_detached, "drop_detached")
        grow = self.extend if extend is None else check_flag(extend, "extend")
        return self._parse(items, per_image_boxes, return_probs, single, tta, decode, scale, band, drop, grow)

    @property
    def implicit(self) -> bool:
        """Whether the model has an implicit decoder (FP-LIIF); a dense model (SegFace, STN-iCNN) is parsed from
        its logits at the input size, resampled at the output pixels."""
        return bool(self.backend.implicit)

    def _decode_mode(self, decode: str | None, default: str | None = None) -> str:
        """``decode`` checked (None: ``default``, else the parser's); adaptive decoding needs an implicit model."""
        mode = check_decode_mode(decode) if decode is not None else default or self.decode
        if mode == "adaptive" and not self.implicit:
            raise ValueError(
                f"decode: 'adaptive' queries an implicit decoder (FP-LIIF); {_model_name(self.model)!r} is a dense "
                "model: use decode='dense' (its default)"
            )
        return mode

    def _parse(
        self,
        items,
        per_image_boxes,
        return_probs,
        single,
        tta=False,
        decode="dense",
        context=0.0,
        feather=0.0,
        drop=False,
        extend=False,
    ):
        canvases = [Canvas(*img.shape[:2], len(self.classes), keep_probs=return_probs) for img, _ in items]
        jobs, messages = self._plan(items, per_image_boxes, context)
        self._check_work(jobs, items, tta)
        faces: list[list[Face]] = [[] for _ in items]
        n = self.input_size
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start : start + self.batch_size]
            windows = [(j.image, j.win) for j in chunk] + [(j.image, w) for j in chunk for w in (j.ctx, j.low) if w]
            batch = np.stack([model_input(extract_crop(items[i][0], w, pad=self.pad), (n, n)) for i, w in windows])
            latents, mirrored = self._encode(batch, tta)
            ctx_latents = iter(zip(latents[len(chunk) :], mirrored[len(chunk) :], strict=True))
            with self.backend.decoding() if decode == "adaptive" else contextlib.nullcontext():
                for job, z, zm in zip(chunk, latents[: len(chunk)], mirrored[: len(chunk)], strict=True):
                    limits.check_deadline()
                    around = [next(ctx_latents) for w in (job.ctx, job.low) if w is not None]
                    image, canvas = items[job.image][0], canvases[job.image]
                    face = self._parse_face(job, z, zm, around, image, canvas, decode, feather, drop)
                    faces[job.image].append(face)
        for i in sorted({j.image for j in jobs}):
            mine = [j for j in jobs if j.image == i]
            if extend and context:
                self._extend(items[i][0], canvases[i], mine, faces[i])
            if drop:
                canvases[i].drop_detached(self.face_seeds(canvases[i].labels, [j.box for j in mine]))
        results = []
        for i, (img, source) in enumerate(items):
            c = canvases[i]
            results.append(
                ParseResult(
                    labels=c.labels,
                    faces=faces[i],
                    classes=self.classes,
                    label_set=self.label_set,
                    image=img,
                    probs=c.probs,
                    confidence=c.confidence() if return_probs else None,
                    message=messages[i],
                    source=source,
                )
            )
        return results[0] if single else results

    def _extend(self, image: np.ndarray, canvas: Canvas, jobs: list[_Job], faces: list[Face]) -> None:
        """Continue the outer classes past each face's context windows into the photo, guided by its colours
        (:func:`~fpliif.infer.extend.extend_labels`; one-hot probabilities there), into the canvas and the faces'
        own labels (each face's region grows to hold its new pixels)."""
        from .extend import extend_labels
        from .images import to_uint8

        rgb = to_uint8(image)[..., :3]
        labels = canvas.labels
        for job, face in zip(jobs, faces, strict=True):
            windows = [w for w in (job.ctx, job.low) if w is not None]
            others = [w for o in jobs if o is not job for w in (o.win, o.ctx, o.low) if w is not None]
            grown = extend_labels(rgb, labels, windows, self._extend_classes, others=others)
            _add_to_face(face, grown != labels, grown)
            labels = grown
        canvas.relabel(labels)

    def _plan(self, items, per_image_boxes, context: float) -> tuple[list[_Job], list[str | None]]:
        """Detect (where no boxes were given) and frame every face: its window, and its context window
        (``context`` times as large, 0: none); per image, the no-face message or None."""
        jobs: list[_Job] = []
        messages: list[str | None] = []
        framing = self.framing
        for i, (img, source) in enumerate(items):
            limits.check_deadline()
            h, w = img.shape[:2]
            dets = per_image_boxes[i]
            name = "boxes" if len(items) == 1 else f"boxes[{i}]"
            if dets is None:
                from .images import to_uint8

                dets = self.detect(to_uint8(img))
                name = "the detector" + ("" if len(items) == 1 else f" on image[{i}]")
            for box, _, _ in dets:  # a window far larger than the image would only cost memory and time
                check_box_fits(box, w, h, name)
            found = len(jobs)
            for box, score, lm in dets:
                win = framing.window(box, self._angle(lm), None if lm is None else nose_point(lm))
                xa, ya, xb, yb = win.region(w, h)
                if xb <= xa or yb <= ya:
                    log.warning("%s: face box %s lies outside the %dx%d image; skipped", source or "image", box, w, h)
                    continue
                ctx = win.scaled(context) if context else None
                jobs.append(_Job(i, box, score, lm, win, ctx, _lower(ctx, w, h)))
            msg = None
            if len(jobs) == found:
                msg = f"{NO_FACE_MESSAGE} in {source or 'image'} ({w}x{h}); labels are all background"
                log.warning(msg)
            messages.append(msg)
        return jobs, messages

    def _angle(self, landmarks: np.ndarray | None) -> float:
        """A face's crop angle: its roll (``align``), else 0, or with ``any_orientation`` the nearest quarter turn."""
        if landmarks is None or not (self.align or self.any_orientation):
            return 0.0
        roll = roll_degrees(landmarks)
        return roll if self.align else quarter_turn(roll)

    def _parse_face(
        self,
        job: _Job,
        z: Any,
        zm: Any,
        around: list,
        image: np.ndarray,
        canvas: Canvas,
        decode: str,
        feather: float,
        drop: bool = False,
    ) -> Face:
        """Decode one face's window and its context windows (``around``: their latents) into ``canvas``: the
        context window, blended over a band ``feather`` half-sides wide, and below it the lower context window."""
        h, w = image.shape[:2]
        win, ctx, low = job.win, job.ctx, job.low
        inner = win.region(w, h)
        around_src = outer = None
        if ctx is not None:
            outer = ctx.region(w, h)
            around_src = self._source(*around[0], ctx, decode, outer, face=win, band=feather)
        face_src = self._source(z, zm, win, decode, inner)
        parts = [(inner, self._decode_window(face_src, inner, canvas, blend=around_src, band=feather))]
        if ctx is not None:
            parts.append((outer, self._decode_window(around_src, outer, canvas, context_of=win)))
        if low is not None:  # only its pixels outside the context window: face=ctx, band 0 (see _grid_roi)
            below = low.region(w, h)
            low_src = self._source(*around[1], low, decode, below, face=ctx, band=0.0)
            edge = _edge_labels(ctx, *parts[1])
            parts.append((below, self._decode_window(low_src, below, canvas, context_of=ctx, below=edge)))
        region, labels = _merge_labels(parts)
        if drop:
            labels[detached(labels, self.face_seeds(labels, [job.box], region[:2]))] = 0
        x0, y0, side = win
        return Face(
            box=[float(v) for v in job.box],
            score=float(job.score),
            crop=[x0, y0, x0 + side, y0 + side],
            region=list(region),
            labels=labels,
            classes=self.classes,
            landmarks=None if job.landmarks is None else np.asarray(job.landmarks, np.float64).tolist(),
            angle=float(win.angle),
            context=None if ctx is None else [ctx.x0, ctx.y0, ctx.x0 + ctx.side, ctx.y0 + ctx.side],
        )

    def face_seeds(self, labels: np.ndarray, boxes: list, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
        """(H, W) bool: the pixels of ``labels`` (whose pixel (0, 0) is image pixel ``origin``, x, y) inside a face
        box (x0, y0, x1, y1) that hold an inner face class (skin, nose, eyes...: not a context class); a labelled
        region without one is detached (:func:`~fpliif.infer.geometry.detached`, ``drop_detached``). A box that
        holds no inner class at all (the model saw no face part there) seeds all its labelled pixels instead: the
        rule's premise fails there, and a few pixels more or less of one class must not drop a whole person."""
        seeds = np.zeros(labels.shape, bool)
        h, w = labels.shape
        for x0, y0, x1, y1 in boxes:
            xa, ya = max(int(np.floor(x0)) - origin[0], 0), max(int(np.floor(y0)) - origin[1], 0)
            xb, yb = min(int(np.ceil(x1)) - origin[0], w), min(int(np.ceil(y1)) - origin[1], h)
            if xb <= xa or yb <= ya:
                continue
            box = labels[ya:yb, xa:xb]
            inner = self._seed_classes[box]
            seeds[ya:yb, xa:xb] |= inner if inner.any() else box > 0
        return seeds

    def window_points(self, side: int, region_pixels: int) -> int:
        """Decoder queries for one face (one pass, without TTA): its visible pixels, or ``max_decode_size``
        squared when the crop is decoded on that grid and resampled."""
        m = self.max_decode_size
        return int(region_pixels) if m is None or side <= m else int(m) * int(m)

    def job_points(self, job: _Job, width: int, height: int) -> int:
        """Decoder queries for one face (one pass, without TTA): :meth:`window_points` of its window, plus those
        of its context windows over their whole regions (an upper bound: only the context window's pixels outside
        the face window and the lower window's below the context window are decoded)."""
        points = 0
        for win in (job.win, job.ctx, job.low):
            if win is not None:
                xa, ya, xb, yb = win.region(width, height)
                points += self.window_points(win.side, (xb - xa) * (yb - ya))
        return points

    def _strips(self, rows: int, cols: int) -> list[tuple[int, int]]:
        """Row strips of a ``rows`` x ``cols`` region, each at most :data:`PIXEL_BLOCK` pixels (and ``max_queries``)
        that are sampled, softmaxed and pasted together (at least one row each)."""
        return strips(rows, cols, min(self.max_queries, PIXEL_BLOCK))

    def _check_work(self, jobs: list[_Job], items: list[tuple[np.ndarray, str | None]], tta: bool) -> None:
        """OverBudget, before anything is decoded, for an image whose faces (and their context windows) need
        more decoder queries than the budget in force (:func:`fpliif.limits.effective`)."""
        limit = limits.effective("max_points", self.max_points)
        if limit is None:
            return
        points, faces = [0] * len(items), [0] * len(items)
        for job in jobs:
            h, w = items[job.image][0].shape[:2]
            points[job.image] += self.job_points(job, w, h) * (2 if tta else 1)
            faces[job.image] += 1
        for i, (n, (_, source)) in enumerate(zip(points, items, strict=True)):
            name = source or (f"image[{i}]" if len(items) > 1 else "image")
            context = " and context windows" if any(j.ctx is not None for j in jobs if j.image == i) else ""
            what = f"{name}: parsing {faces[i]} face(s){context}{' with flip TTA' if tta else ''}"
            limits.check_points(n, limit, what, POINTS_HINT)

    def _encode(self, batch: np.ndarray, tta: bool) -> tuple[list[Any], list[Any]]:
        """Latents of a (B, 3, n, n) batch and, with ``tta``, of its mirror (else B Nones), in one call."""
        if not tta:
            return self.backend.encode(batch), [None] * batch.shape[0]
        both = self.backend.encode(np.concatenate([batch, mirror_images(batch)]))
        return both[: batch.shape[0]], both[batch.shape[0] :]

    def _logits(self, z: Any, zm: Any, coords: np.ndarray) -> np.ndarray:
        """(Q, C) logits at crop ``coords``: the model's, or with a mirrored latent ``zm`` the flip-TTA ones."""
        limits.check_deadline()  # between decode chunks (the model also checks between its own chunks)
        self.points_decoded += coords.shape[0]
        if zm is None:
            return self.backend.decode(z, coords)
        return flip_tta_logits(self.backend.decode, z, zm, coords, self._flip_channels, self.backend.temperature)

    def _adaptive_logits(self, z: Any, zm: Any, h: int, w: int, roi: np.ndarray | None = None) -> np.ndarray:
        """(h, w, C) logits at the pixel centres of an h x w crop grid by coarse-to-fine querying (exact at the
        pixels ``roi`` marks, where given; :func:`~fpliif.adaptive.adaptive_decode`)."""
        logits, _ = adaptive_decode(
            lambda c: self._logits(z, zm, c[0])[None],
            (h, w),
            temperature=self.backend.temperature,
            options=self.adaptive,
            chunk=self.max_queries,
            latent_size=self.backend.latent_size(z),
            roi=roi,
        )
        return logits[0]

    def _source(
        self,
        z: Any,
        zm: Any,
        win: Window,
        decode: str,
        region: tuple[int, int, int, int],
        face: Window | None = None,
        band: float = 0.0,
    ) -> _Source:
        """A window ready to be queried at any of its pixels: its latents, and its logits on a regular crop grid
        when it is decoded that way (crops larger than ``max_decode_size``, and adaptive decoding), else None. A
        context window's adaptive grid is at most :data:`CONTEXT_GRID_SCALE` times the input side.

        ``region``: the image pixels it will be queried at; only the grid pixels that sampling there reads are
        decoded (:meth:`_grid_roi`; ``face``/``band``: ``win`` is the context window of that face window), with the
        same values there as decoding the whole grid."""
        exact = self.max_decode_size is None or win.side <= self.max_decode_size
        if decode != "adaptive" and exact:
            return _Source(z, zm, win, None)
        g = win.side if exact else int(self.max_decode_size)
        cap = (FACE_GRID_SCALE if face is None else CONTEXT_GRID_SCALE) * self.input_size
        if decode == "adaptive" and cap < g:  # capped (inf: not capped)
            g = int(round(cap))
        roi = self._grid_roi(win, g, region, face, band)
        if decode == "adaptive":
            return _Source(z, zm, win, self._adaptive_logits(z, zm, g, g, roi))
        idx = np.flatnonzero(roi)
        grid = np.zeros((g * g, len(self.classes)), np.float32)
        for s in range(0, idx.size, self.max_queries):
            part = idx[s : s + self.max_queries]
            grid[part] = self._logits(z, zm, index_coords(part, g, g))
        return _Source(z, zm, win, grid.reshape(g, g, -1))

    def _grid_roi(
        self, win: Window, g: int, region: tuple[int, int, int, int], face: Window | None, band: float
    ) -> np.ndarray:
        """(g, g) bool: the pixels of ``win``'s g x g crop grid that bilinear sampling reads at the pixels of
        ``region`` that use it: those inside ``win``, and for a context window (``face``: its face window) only
        where the face window's :func:`~fpliif.infer.geometry.feather_weights` are below 1 (its band, outside it)."""
        roi = np.zeros((g, g), bool)
        xa, ya, xb, yb = region
        cols = np.arange(xa, xb)
        for r0, r1 in self._strips(yb - ya, xb - xa):
            rows = np.arange(ya + r0, ya + r1)
            coords, inside = win.crop_coords(rows, cols)
            if face is not None:
                inside &= feather_weights(face.crop_coords(rows, cols)[0], band) < 1
            mark_taps(roi, *grid_positions(coords[inside], g))
        return roi

    def _source_logits(self, src: _Source, coords: np.ndarray, want: np.ndarray) -> np.ndarray:
        """(P, C) logits of ``src`` at crop ``coords`` (P, 2): decoded there, or sampled bilinearly from its grid;
        points where ``want`` is false may be left at 0 (they are not decoded)."""
        if want.all():
            return self._window_logits(src, coords)
        logits = np.zeros((coords.shape[0], len(self.classes)), np.float32)
        if want.any():
            logits[want] = self._window_logits(src, coords[want])
        return logits

    def _window_logits(self, src: _Source, coords: np.ndarray) -> np.ndarray:
        """(P, C) logits of ``src`` at crop ``coords`` (P, 2): sampled bilinearly from its grid, or decoded there."""
        if src.grid is None:
            return self._logits(src.z, src.zm, coords)
        return bilinear_points(src.grid, *grid_positions(coords, src.grid.shape[0]))

    def _probs(
        self, logits: np.ndarray, want: np.ndarray | None = None, classes: np.ndarray | None = None
    ) -> np.ndarray:
        """(C, P) probabilities (classes first, as the canvas takes them) of (P, C) ``logits`` where ``want`` is true
        (None: everywhere; 0 elsewhere); ``classes`` ((C,) or (C, P) bool, e.g. a context window's classes): over
        those classes only (the others get 0). The values of :func:`~fpliif.infer.geometry.softmax` on (P, C)."""
        t = self.backend.temperature
        if want is not None and not want.all():
            probs = np.zeros(logits.shape[::-1], np.float32)
            probs[:, want] = self._probs(
                logits[want], None, classes if classes is None or classes.ndim == 1 else classes[:, want]
            )
            return probs
        x = channels_first(logits)
        if classes is not None:
            x = np.where(classes if classes.ndim == 2 else classes[:, None], x, np.float32(-np.inf))
        return softmax_first(x, t)

    def _decode_window(
        self,
        src: _Source,
        region: tuple[int, int, int, int],
        canvas: Canvas,
        context_of: Window | None = None,
        blend: _Source | None = None,
        band: float = 0.0,
        below: np.ndarray | None = None,
    ) -> np.ndarray:
        """Decode one window at the original pixels of ``region`` that lie inside it (possibly rotated) and merge
        them into ``canvas``; returns its own labels over ``region`` (0 outside the window).

        Each pixel's crop coordinates come from the window's similarity transform (:meth:`Window.crop_coords`);
        the implicit model is decoded right there (or its grid sampled there, :meth:`_source`).

        ``context_of``: ``src`` is the context window of this face window: only its pixels outside the face
        window are labelled, with the context classes only, at the canvas's lower context priority; ``below``:
        ``src`` is the lower context window, ``context_of`` the context window and ``below`` the latter's labels
        along its bottom edge (:meth:`_lower_classes`).
        ``blend``: the context window of this face window: in the face window's outer band (``band``
        half-sides wide) the face's probabilities are blended with the context's (all classes), their weight
        falling linearly from 1 to 0 at the edge (:func:`~fpliif.infer.geometry.feather_weights`): no seam."""
        xa, ya, xb, yb = region
        rows, cols = yb - ya, xb - xa
        labels = np.zeros((rows, cols), np.uint8)
        col_idx = np.arange(xa, xb)
        for r0, r1 in self._strips(rows, cols):
            row_idx = np.arange(ya + r0, ya + r1)
            coords, inside = src.win.crop_coords(row_idx, col_idx)
            classes = None
            if context_of is not None:
                around, in_around = context_of.crop_coords(row_idx, col_idx)
                inside &= ~in_around
                classes = self._context_classes if below is None else self._lower_classes(below, around[:, 0])
            logits = self._source_logits(src, coords, inside)
            probs = self._probs(logits, inside, classes)
            if blend is not None:
                self._feather(probs, blend, coords, inside, row_idx, col_idx, band)
            mask = None if inside.all() else inside.reshape(r1 - r0, cols)
            level = FACE_LEVEL if context_of is None else CONTEXT_LEVEL
            labels[r0:r1] = canvas.paste(ya + r0, xa, probs.reshape(-1, r1 - r0, cols), mask, level)
        return labels

    def _lower_classes(self, edge: np.ndarray, u: np.ndarray) -> np.ndarray:
        """(C, P) bool: the classes a lower context window may give pixels at the context window's crop x ``u`` (P,):
        :data:`~fpliif.infer.framing.BELOW_CLASSES`, and a :data:`~fpliif.infer.framing.BELOW_CONTINUED` class
        where the context window's label ``edge`` (one per pixel of its bottom edge) above that pixel is that class."""
        k = np.clip(((u + 1) / 2 * edge.size).astype(np.int64), 0, edge.size - 1)
        above = edge[k] == np.arange(self._continued.size)[:, None]
        return self._below_classes[:, None] | (self._continued[:, None] & above)

    def _feather(
        self,
        probs: np.ndarray,
        ctx: _Source,
        coords: np.ndarray,
        inside: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray,
        width: float,
    ) -> None:
        """Blend a face window's (C, P) ``probs`` in place with its context window's over the outer band ``width``
        half-sides wide (there with all classes: the face core may reach the band; measured in docs/detection.md)."""
        weight = feather_weights(coords, width)
        band = inside & (weight < 1)
        if not band.any():
            return
        ctx_probs = self._probs(self._window_logits(ctx, ctx.win.crop_coords(rows, cols)[0][band]))
        w = weight[band]
        probs[:, band] = w * probs[:, band] + (1 - w) * ctx_probs

    # ------------------------------------------------------------------------------------------ aligned crops
    def parse_aligned(
        self,
        crops: Any,
        size: int | tuple[int, int] | None = None,
        return_probs: bool = False,
        tta: bool | None = None,
        decode: str | None = None,
    ) -> ParseResult | list[ParseResult]:
        """Parse already aligned face crop(s) (CelebAMask-HQ framing: head, some neck), no detection.

        ``size``: output size, int or (H, W) (default: each input's own size). The crop is resized to the
        model input size and the implicit decoder is queried at the output's pixel centres. ``tta``: flip
        test-time augmentation (default: the parser's ``tta``). ``decode``: ``"dense"`` or ``"adaptive"``
        (default: the parser's ``decode``).
        """
        decode = self._decode_mode(decode)
        tta = self.tta if tta is None else check_flag(tta, "tta")
        items, single = as_images(crops, limits.effective("max_pixels", self.max_pixels))
        sizes = [check_size(size) if size is not None else img.shape[:2] for img, _ in items]
        for (h, w), (img, source) in zip(sizes, items, strict=True):
            self.check_aligned_output(h, w, tta, source, implied=size is None)
            _warn_if_squashed(img.shape[:2], source)
        n = self.input_size
        results: list[ParseResult] = []
        for start in range(0, len(items), self.batch_size):
            chunk = list(range(start, min(start + self.batch_size, len(items))))
            latents, mirrored = self._encode(np.stack([model_input(items[i][0], (n, n)) for i in chunk]), tta)
            for i, z, zm in zip(chunk, latents, mirrored, strict=True):
                limits.check_deadline()
                img, source = items[i]
                h, w = sizes[i]
                canvas = Canvas(h, w, len(self.classes), keep_probs=return_probs)
                self._decode_window_aligned(z, zm, h, w, canvas, decode)
                shown = img if img.shape[:2] == (h, w) else resize_rgb(img, h, w)
                face = Face(
                    box=[0.0, 0.0, float(w), float(h)],
                    score=1.0,
                    crop=[0, 0, w, h],
                    region=[0, 0, w, h],
                    labels=canvas.labels,
                    classes=self.classes,
                )
                results.append(
                    ParseResult(
                        labels=canvas.labels,
                        faces=[face],
                        classes=self.classes,
                        label_set=self.label_set,
                        image=shown,
                        probs=canvas.probs,
                        confidence=canvas.confidence() if return_probs else None,
                        source=source,
                    )
                )
        return results[0] if single else results

    def check_aligned_output(
        self, h: int, w: int, tta: bool = False, source: str | None = None, implied: bool = False
    ) -> None:
        """TooManyPixels / OverBudget if an aligned output of h x w pixels is over ``max_pixels`` or needs more
        decoder queries than the budget in force; ``implied``: the size is the input's own (no ``size``)."""
        name = source or "crop"
        note = " (the input's own size; pass a smaller size)" if implied else ""
        max_pixels = limits.effective("max_pixels", self.max_pixels)
        limits.check_pixels(w, h, max_pixels, f"{name}: aligned output{note}")
        points = int(h) * int(w) * (2 if tta else 1)
        what = f"{name}: aligned output {w}x{h}{note}{' with flip TTA' if tta else ''}"
        limits.check_points(points, limits.effective("max_points", self.max_points), what, POINTS_HINT)

    def _decode_window_aligned(self, z: Any, zm: Any, h: int, w: int, canvas: Canvas, decode: str = "dense") -> None:
        grid = self._adaptive_logits(z, zm, h, w) if decode == "adaptive" else None
        for r0, r1 in self._strips(h, w):
            if grid is None:
                logits = self._logits(z, zm, grid_coords(np.arange(r0, r1), np.arange(w), h, w))
            else:
                logits = grid[r0:r1].reshape((r1 - r0) * w, -1)
            canvas.paste(r0, 0, self._probs(logits).reshape(-1, r1 - r0, w))


# ---------------------------------------------------------------------------------------------- helpers
class _OnnxBackend:
    name = "onnxruntime"
    implicit = True  # exports hold FP-LIIF's encoder and implicit decoder

    def __init__(self, model: Any):
        self.model = model
        self.label_set = model.label_set
        self.temperature = model.temperature
        self.input_size = model.input_size

    def encode(self, batch: np.ndarray) -> list[np.ndarray]:
        latent = self.model.encode(batch)
        return [latent[i : i + 1] for i in range(latent.shape[0])]

    def decode(self, latent: np.ndarray, coords: np.ndarray) -> np.ndarray:
        return self.model.query(latent, coords[None])[0]

    def decoding(self) -> contextlib.AbstractContextManager[None]:
        """onnxruntime keeps its session's threads."""
        return contextlib.nullcontext()

    def latent_size(self, latent: np.ndarray) -> tuple[int, int] | None:
        """(h, w) of the encoder's grid for this latent, None if unknown."""
        return self.model.latent_size(latent)


def _lower(ctx: Window | None, width: int, height: int) -> Window | None:
    """The lower context window of ``ctx`` (None without one), None where it reaches no pixel of the
    ``width`` x ``height`` photo beyond the context window's bounding box (not worth an encoder pass)."""
    if ctx is None:
        return None
    low = lower_window(ctx)
    xa, ya, xb, yb = low.region(width, height)
    ca, cb, cc, cd = ctx.region(width, height)
    return low if xb > xa and yb > ya and (xa < ca or ya < cb or xb > cc or yb > cd) else None


def _edge_labels(win: Window, region: tuple[int, int, int, int], labels: np.ndarray) -> np.ndarray:
    """(side,) uint8: ``win``'s own ``labels`` (over ``region``) just inside its bottom edge (1.5 pixels in), one
    per pixel of its side; 0 where that lies outside the region (outside the photo)."""
    n = win.side
    u = (np.arange(n) + 0.5) / n * 2 - 1
    x, y = win.image_points(np.stack([u, np.full(n, 1 - 3 / n)], axis=1)).T
    col, row = np.floor(x).astype(np.int64) - region[0], np.floor(y).astype(np.int64) - region[1]
    ok = (row >= 0) & (row < labels.shape[0]) & (col >= 0) & (col < labels.shape[1])
    out = np.zeros(n, np.uint8)
    out[ok] = labels[row[ok], col[ok]]
    return out


def _add_to_face(face: Face, new: np.ndarray, labels: np.ndarray) -> None:
    """Put the image ``labels`` at the pixels ``new`` ((H, W) bool) into ``face``'s own labels, its region grown to
    hold them."""
    if not new.any():
        return
    ys, xs = np.nonzero(new)
    xa, ya, xb, yb = face.region
    x0, y0 = min(xa, int(xs.min())), min(ya, int(ys.min()))
    x1, y1 = max(xb, int(xs.max()) + 1), max(yb, int(ys.max()) + 1)
    out = np.zeros((y1 - y0, x1 - x0), np.uint8)
    out[ya - y0 : yb - y0, xa - x0 : xb - x0] = face.labels
    out[ys - y0, xs - x0] = labels[ys, xs]
    face.region, face.labels = [x0, y0, x1, y1], out


def _merge_labels(parts: list[tuple[tuple[int, int, int, int], np.ndarray]]) -> tuple[tuple[int, ...], np.ndarray]:
    """Labels over regions (xa, ya, xb, yb) whose non-zero pixels are disjoint -> their bounding region and the
    labels over it."""
    boxes = np.array([r for r, _ in parts])
    region = (*boxes[:, :2].min(axis=0).tolist(), *boxes[:, 2:].max(axis=0).tolist())
    out = np.zeros((region[3] - region[1], region[2] - region[0]), np.uint8)
    for (xa, ya, xb, yb), labels in parts:
        sub = out[ya - region[1] : yb - region[1], xa - region[0] : xb - region[0]]
        np.maximum(sub, labels, out=sub)
    return region, out


def _model_name(model: Any) -> str:
    """The registered name of a model (its spec's), else its type's name."""
    spec = getattr(model, "spec", None)
    return str(spec["name"]) if isinstance(spec, dict) and "name" in spec else type(model).__name__


def _load_model(weights: str | Path | None, device: str = "cpu", threads: int | None = None) -> Any:
    if weights is not None and str(weights).lower().endswith(".onnx"):
        from .onnx_backend import OnnxModel

        return OnnxModel(weights, device=device, threads=threads)
    from ..models.checkpoint import load

    return load(weights)


SQUASH_WARNING = 1.25
"""An aligned crop whose sides differ by more than this ratio gets a logged warning: it is squashed to a square."""


def _warn_if_squashed(shape: tuple[int, int], source: str | None) -> None:
    """Log a warning when an aligned crop is far from square (the model sees it squashed to its square input)."""
    h, w = shape
    if max(h, w) > SQUASH_WARNING * min(h, w):
        log.warning(
            "%s: %dx%d is not square; as an aligned crop it is squashed to the model's square input (a photo: "
            "parse it without --aligned / with FaceParser(...)(image) to detect and crop the face)",
            source or "image",
            w,
            h,
        )
