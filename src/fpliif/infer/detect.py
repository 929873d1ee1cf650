"""Offline face detection for in-the-wild photos: MTCNN (default; boxes, 5 landmarks, score) and OpenCV Haar
cascades (fallback; boxes and score only). Both run on OpenCV (its DNN module for MTCNN); neither imports torch.

A detector is any callable ``detector(image_rgb_uint8 (H, W, 3)) -> list[detection]`` where a detection is
``(box, score)`` or ``(box, score, landmarks)``: ``box`` = ``(x1, y1, x2, y2)`` in image pixels (floats; x2/y2
exclusive), ``score`` a float (higher = more face-like) and ``landmarks`` a (5, 2) array of (x, y) image
coordinates or None, in the order of :data:`LANDMARKS`. With landmarks, :class:`fpliif.FaceParser` rolls
each crop so that the eyes are level (:func:`roll_degrees`). A detector may carry a ``framing`` attribute
(:class:`~fpliif.infer.framing.Framing`: how its boxes sit in a CelebAMask-HQ crop), which the parser uses
unless it is given one. Pass your own detector to :class:`fpliif.FaceParser` via ``detector=``.

MTCNN (Zhang et al., IEEE SPL 2016): the P/R/O-net cascade with the weights of ``facenet-pytorch`` 2.6.0
(MIT), bundled as float16 ONNX files (about 1 MB, ``assets/mtcnn_*.onnx``, rebuilt by
``scripts/convert_mtcnn.py``); see docs/detection.md for why it was chosen and how it was measured.
:class:`SecondChance` adds the faces of a wider MTCNN search that a check (:func:`parse_check`) confirms;
:class:`AnyOrientation` finds faces turned on their side or upside down (on the image's quarter turns).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Container, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..limits import check_deadline

Box = tuple[float, float, float, float]
Detection = tuple[Box, float]
Detector = Callable[[np.ndarray], Sequence[Any]]

LANDMARKS = ("eye_image_left", "eye_image_right", "nose", "mouth_image_left", "mouth_image_right")
"""Order of the 5 landmarks: for an upright frontal face, the subject's right eye (on the image's left),
left eye, nose tip, right and left mouth corner (the order of MTCNN, RetinaFace and YuNet)."""

DETECTORS = ("mtcnn", "haar")
"""Names accepted by :func:`make_detector` (``fpliif parse --detector``); the first is the default."""

ASSETS = Path(__file__).resolve().parents[1] / "assets"
MTCNN_FILES = ("mtcnn_pnet.onnx", "mtcnn_rnet.onnx", "mtcnn_onet.onnx")

SECOND_CHANCE_THRESHOLDS = (0.5, 0.6)
"""P-net and R-net thresholds of :meth:`MTCNNDetector.candidates` (the default pass: 0.6, 0.7)."""
SECOND_CHANCE_MIN_FACE = 0.02
"""Smallest face of :meth:`MTCNNDetector.candidates`, as a fraction of the image's shorter side (default pass 0.04)."""
FRAME_MARGIN = 0.125
"""Where :class:`MTCNNDetector` finds no face, it looks again with the image on a grey canvas this share of its longer
side larger on every side: a face filling the frame (a selfie, a tight crop) is scored on its whole box there."""
SECOND_CHANCE_OVERLAP = 0.3
"""A candidate overlapping a found face (or a better candidate) by more than this share of the smaller box is the
same face."""
FACE_PARTS = {
    "nose": ("nose",),
    "eyes": ("l_eye", "r_eye", "eye_g"),
    "brows": ("l_brow", "r_brow"),
    "mouth": ("mouth", "u_lip", "l_lip"),
}
"""The face parts :func:`face_parts_found` looks for in a parse, by class name."""

FRONTAL = "haarcascade_frontalface_default.xml"
PROFILE = "haarcascade_profileface.xml"


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as e:
        raise ImportError(
            "face detection needs OpenCV: pip install 'opencv-python-headless>=4.10,<5' "
            f"(or pass boxes=... / --aligned to skip detection); import failed: {e}"
        ) from e
    return cv2


def roll_degrees(landmarks: Any) -> float:
    """In-plane roll of a face from its landmarks (:data:`LANDMARKS` order): the direction of the line from
    the image-left eye to the image-right eye, in degrees, image coordinates (y down; positive = clockwise)."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 2)
    dx, dy = lm[1] - lm[0]
    return float(math.degrees(math.atan2(dy, dx)))


def quarter_turn(degrees: float) -> float:
    """The multiple of 90 degrees nearest to ``degrees`` (a roll, as :func:`roll_degrees`; never -0.0)."""
    return 90.0 * round(float(degrees) / 90.0) + 0.0


def nose_point(landmarks: Any) -> tuple[float, float]:
    """The nose landmark (x, y) of landmarks in :data:`LANDMARKS` order (the window's turned-head term,
    :meth:`fpliif.infer.framing.Framing.window`)."""
    x, y = np.asarray(landmarks, np.float64).reshape(-1, 2)[LANDMARKS.index("nose")]
    return float(x), float(y)


def make_detector(name: str = "mtcnn", **kwargs: Any) -> Any:
    """A detector by name: ``"mtcnn"`` (:class:`MTCNNDetector`) or ``"haar"`` (:class:`HaarDetector`)."""
    if name == "mtcnn":
        return MTCNNDetector(**kwargs)
    if name == "haar":
        return HaarDetector(**kwargs)
    raise ValueError(f"detector: expected one of {', '.join(DETECTORS)}, got {name!r}")


def _check_max_side(max_side: Any) -> int:
    """A detector's ``max_side``: a positive int (the bound on the detection input's longer side)."""
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1:
        raise ValueError(f"max_side: expected a positive number of pixels, got {max_side!r}")
    return int(max_side)


def _check_image(image: Any) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"detector: expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    return image


def _cascade(name: str):
    cv2 = _cv2()

    path = os.path.join(cv2.data.haarcascades, name)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"cannot load the OpenCV Haar cascade {path}")
    return cascade


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (optionally plus the profile cascade, both mirror directions); no
    landmarks, so crops are not rolled. The fallback detector (``fpliif parse --detector haar``).

    Args:
        min_face: smallest face to look for, as a fraction of the image's shorter side (or pixels if >= 1).
        scale_factor, min_neighbors: ``cv2.CascadeClassifier.detectMultiScale`` parameters.
        min_score: drop detections whose cascade score (final-stage weight) is below this.
        profile: also run the profile-face cascade when the frontal one finds nothing.
        max_side: the image is shrunk to at most this many pixels on its longer side for detection
            (boxes are scaled back); speeds up large photos.

    Scores are the cascade's final-stage weight (``detectMultiScale3(outputRejectLevels=True)``): unbounded,
    higher is more face-like; on the CelebAMask-HQ crops true faces score about 2-12.
    """

    def __init__(
        self,
        min_face: float = 0.05,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_score: float = 0.0,
        profile: bool = False,
        max_side: int = 1280,
    ):
        self.min_face = float(min_face)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_score = float(min_score)
        self.profile = bool(profile)
        self.max_side = _check_max_side(max_side)
        self._frontal = None
        self._profile = None

    def __repr__(self) -> str:
        return (
            f"HaarDetector(min_face={self.min_face}, scale_factor={self.scale_factor}, "
            f"min_neighbors={self.min_neighbors}, min_score={self.min_score}, profile={self.profile})"
        )

    def _run(self, cascade, gray: np.ndarray, min_px: int) -> list[Detection]:
        check_deadline()  # one cascade run cannot be interrupted: its input is bounded by max_side instead
        boxes, _, weights = cascade.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_px, min_px),
            outputRejectLevels=True,
        )
        out = []
        boxes, weights = np.asarray(boxes).reshape(-1, 4), np.asarray(weights).ravel()
        for (x, y, w, h), s in zip(boxes, weights, strict=True):
            out.append(((float(x), float(y), float(x + w), float(y + h)), float(s)))
        return out

    @property
    def framing(self) -> Any:
        from .framing import HAAR_FRAMING

        return HAAR_FRAMING

    def __call__(self, image: np.ndarray) -> list[Detection]:
        cv2 = _cv2()
        image = _check_image(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        min_px = self.min_face if self.min_face >= 1 else self.min_face * min(gray.shape)
        min_px = max(20, int(round(min_px)))
        if self._frontal is None:
            self._frontal = _cascade(FRONTAL)
        dets = self._run(self._frontal, gray, min_px)
        if not dets and self.profile:
            if self._profile is None:
                self._profile = _cascade(PROFILE)
            dets = self._run(self._profile, gray, min_px)
            gw = gray.shape[1]
            for (x1, y1, x2, y2), s in self._run(self._profile, np.ascontiguousarray(gray[:, ::-1]), min_px):
                dets.append(((gw - x2, y1, gw - x1, y2), s))
        check_deadline()
        dets = [((x1 / scale, y1 / scale, x2 / scale, y2 / scale), s) for (x1, y1, x2, y2), s in dets]
        return suppress_nested([d for d in dets if d[1] >= self.min_score])


def suppress_nested(dets: Sequence[Detection], overlap: float = 0.3) -> list[Detection]:
    """Greedy suppression, best score first: drop a box whose area overlaps a kept box by more than
    ``overlap`` of the smaller box's area (Haar often adds small boxes on a chin or neck inside a face)."""
    kept: list[Detection] = []
    for box, score in sorted(dets, key=lambda d: -d[1]):
        if all(box_overlap(box, k[0], "min") <= overlap for k in kept):
            kept.append((box, score))
    return kept


def box_overlap(a: Sequence[float], b: Sequence[float], mode: str = "union") -> float:
    """Overlap of two ``(x1, y1, x2, y2)`` boxes: intersection over union, or over the smaller box (``"min"``)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    denom = min(area_a, area_b) if mode == "min" else area_a + area_b - iw * ih
    return iw * ih / denom if denom > 0 else 0.0


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression, best score first: indices of the kept boxes. ``mode``: overlap as
    intersection over union, or over the smaller box (``"min"``)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores), kind="stable")
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]))
        ih = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]))
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter <= threshold * np.maximum(denom, 1e-12)]
    return np.asarray(keep, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def _refine(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes + reg * np.stack([w, h, w, h], axis=1)


class MTCNNDetector:
    """MTCNN face detector on OpenCV's DNN module: boxes, scores and 5 landmarks (:data:`LANDMARKS`).

    Args:
        min_face: smallest face to look for, as a fraction of the image's shorter side (or pixels if >= 1);
            never below 20 pixels (the P-net's 12-pixel window at its finest scale).
        min_score: final (O-net) face probability to keep a detection. MTCNN's usual 0.7 lets through
            "faces" in clutter (fur, gravel, a wheel) at 0.74-0.94, while 239 of 240 true faces (upright,
            rolled, small) score >= 0.977 (docs/detection.md).
        thresholds: P-net and R-net probabilities to pass a candidate on.
        factor: scale step of the image pyramid.
        max_side: the image is shrunk to at most this many pixels on its longer side for detection (boxes and
            landmarks are scaled back).
        model_dir: folder with ``mtcnn_{pnet,rnet,onet}.onnx`` (default: the bundled ones).
        frame_margin: where no face is found, look again on the image framed by a grey margin of this share of
            its longer side (:data:`FRAME_MARGIN`; 0: no second look). Faces that fill the frame can score below
            ``min_score`` as they are (docs/detection.md).

    Not thread-safe (OpenCV DNN nets keep state): use one detector per thread or a lock.
    """

    def __init__(
        self,
        min_face: float = 0.04,
        min_score: float = 0.95,
        thresholds: tuple[float, float] = (0.6, 0.7),
        factor: float = 0.709,
        max_side: int = 1280,
        model_dir: str | Path | None = None,
        frame_margin: float = FRAME_MARGIN,
    ):
        if not 0 < factor < 1:
            raise ValueError(f"factor: expected a value in (0, 1), got {factor}")
        if not 0 <= frame_margin <= 1:
            raise ValueError(f"frame_margin: expected a share of the image side in [0, 1], got {frame_margin}")
        self.frame_margin = float(frame_margin)
        self.min_face = float(min_face)
        self.min_score = float(min_score)
        self.thresholds = (float(thresholds[0]), float(thresholds[1]))
        self.factor = float(factor)
        self.max_side = _check_max_side(max_side)
        self.model_dir = Path(model_dir) if model_dir is not None else ASSETS
        self._nets: list[Any] | None = None

    def __repr__(self) -> str:
        return (
            f"MTCNNDetector(min_face={self.min_face}, min_score={self.min_score}, thresholds={self.thresholds}, "
            f"factor={self.factor}, max_side={self.max_side}, frame_margin={self.frame_margin})"
        )

    @property
    def framing(self) -> Any:
        from .framing import MTCNN_FRAMING

        return MTCNN_FRAMING

    def _load(self) -> list[Any]:
        if self._nets is None:
            cv2 = _cv2()
            paths = [self.model_dir / f for f in MTCNN_FILES]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"MTCNN model files not found: {', '.join(missing)} (they ship with fpliif; reinstall it, "
                    "rebuild them with scripts/convert_mtcnn.py, or use the Haar detector: --detector haar)"
                )
            if not hasattr(cv2, "dnn"):
                raise ImportError("MTCNN needs OpenCV's DNN module (opencv-python-headless>=4.10,<5)")
            self._nets = [cv2.dnn.readNetFromONNX(str(p)) for p in paths]
        return self._nets

    @staticmethod
    def _run(net: Any, blob: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        net.setInput(np.ascontiguousarray(blob, np.float32))
        return list(net.forward(list(outputs)))

    @staticmethod
    def _blob(images: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) uint8 RGB -> (N, 3, h, w) float32 normalised as in training."""
        return ((images.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 3, 1, 2)

    def _patches(self, image: np.ndarray, boxes: np.ndarray, n: int) -> np.ndarray:
        from .geometry import crop_window

        cv2 = _cv2()
        out = []
        for x1, y1, x2, _ in boxes:
            side = max(1, int(round(x2 - x1)))
            crop = crop_window(image, int(round(x1)), int(round(y1)), side, pad="zero")
            out.append(cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA))
        return self._blob(np.stack(out))

    def __call__(self, image: np.ndarray) -> list[tuple[Box, float, np.ndarray]]:
        image = _check_image(image)
        found = self._detect(image, self.min_face, self.thresholds)
        if found or not self.frame_margin:
            return found
        return self._detect(image, self.min_face, self.thresholds, margin=self.frame_margin)

    def candidates(self, image: np.ndarray) -> list[tuple[Box, float, np.ndarray]]:
        """A wider search for faces that :meth:`__call__` misses (turned, rolled or small): P-net and R-net
        thresholds :data:`SECOND_CHANCE_THRESHOLDS`, the pyramid down to :data:`SECOND_CHANCE_MIN_FACE`, on the image
        and on its mirror image (mapped back), the same final O-net threshold; overlapping boxes merged, best first.
        Not to be used unchecked: it also finds face-like clutter (see :class:`SecondChance`)."""
        image = _check_image(image)
        mirrored = np.ascontiguousarray(image[:, ::-1])
        dets = self._detect(image, SECOND_CHANCE_MIN_FACE, SECOND_CHANCE_THRESHOLDS)
        dets += mirror_detections(
            self._detect(mirrored, SECOND_CHANCE_MIN_FACE, SECOND_CHANCE_THRESHOLDS), image.shape[1]
        )
        if not dets:
            return []
        keep = nms(np.array([d[0] for d in dets]), np.array([d[1] for d in dets]), SECOND_CHANCE_OVERLAP, mode="min")
        return [dets[k] for k in keep]

    def _detect(
        self, image: np.ndarray, min_face: float, thresholds: tuple[float, float], margin: float = 0.0
    ) -> list[tuple[Box, float, np.ndarray]]:
        """The P/R/O-net cascade on a checked image, smallest face ``min_face``, P-net and R-net ``thresholds``;
        ``margin``: on the image framed by grey (127) of this share of its longer side, mapped back."""
        cv2 = _cv2()
        pnet, rnet, onet = self._load()
        h0, w0 = image.shape[:2]
        scale = min(1.0, self.max_side / max(h0, w0))
        if scale < 1.0:
            image = cv2.resize(
                image, (max(1, round(w0 * scale)), max(1, round(h0 * scale))), interpolation=cv2.INTER_AREA
            )
        h, w = image.shape[:2]
        # smallest face in detection pixels: a fraction of the shorter side, or original pixels scaled down
        min_px = max(20.0, min_face * scale if min_face >= 1 else min_face * min(h, w))
        pad = round(margin * max(h, w))
        if pad:
            image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(127, 127, 127))
            h, w = image.shape[:2]
        # stage 1: P-net over an image pyramid (12-pixel windows, stride 2)
        found = []
        s = 12.0 / min_px
        while min(h, w) * s >= 12:
            check_deadline()  # between pyramid levels and stages (the input is bounded by max_side)
            hs, ws = int(h * s + 1), int(w * s + 1)
            level = cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA)
            prob, reg = self._run(pnet, self._blob(level[None]), ("prob", "reg"))
            ys, xs = np.nonzero(prob[0, 0] >= thresholds[0])
            if len(ys):
                b = np.stack([2 * xs + 1, 2 * ys + 1, 2 * xs + 12, 2 * ys + 12], axis=1) / s
                b = np.floor(b)
                sc = prob[0, 0, ys, xs]
                keep = nms(b, sc, 0.5)
                found.append(np.concatenate([b[keep], sc[keep, None], reg[0][:, ys, xs].T[keep]], axis=1))
            s *= self.factor
        if not found:
            return []
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        boxes = _square(_refine(cand[:, :4], cand[:, 5:9]))
        # stage 2: R-net on 24 x 24 patches
        check_deadline()
        prob, reg = self._run(rnet, self._patches(image, boxes, 24), ("prob", "reg"))
        ok = prob[:, 0] > thresholds[1]
        boxes, sc, reg = boxes[ok], prob[ok, 0], reg[ok]
        if not len(boxes):
            return []
        keep = nms(boxes, sc, 0.7)
        boxes = _square(_refine(boxes[keep], reg[keep]))
        # stage 3: O-net on 48 x 48 patches: final score, box and landmarks
        check_deadline()
        prob, reg, pts = self._run(onet, self._patches(image, boxes, 48), ("prob", "reg", "landmarks"))
        ok = prob[:, 0] >= self.min_score
        boxes, sc, reg, pts = boxes[ok], prob[ok, 0], reg[ok], pts[ok]
        if not len(boxes):
            return []
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        lms = np.stack([pts[:, :5] * bw[:, None] + boxes[:, :1], pts[:, 5:] * bh[:, None] + boxes[:, 1:2]], -1)
        boxes, lms = _refine(boxes, reg) - pad, lms - pad
        keep = nms(boxes, sc, 0.7, mode="min")
        return [
            (tuple(float(v) / scale for v in boxes[k]), float(sc[k]), (lms[k] / scale).astype(np.float32)) for k in keep
        ]


def mirror_detections(dets: Sequence[Any], width: int) -> list[tuple[Box, float, np.ndarray]]:
    """Detections ``(box, score, landmarks)`` made on an image's mirror image, mapped back to the image (``width``
    pixels wide): boxes and landmarks flipped, landmarks swapped left/right so that they stay in :data:`LANDMARKS`
    order."""
    out = []
    for (x1, y1, x2, y2), score, lm in dets:
        lm = np.array(lm, np.float32)[[1, 0, 2, 4, 3]]
        lm[:, 0] = width - lm[:, 0]
        out.append(((width - x2, y1, width - x1, y2), score, lm))
    return out


def turn_points(points: Any, turns: int, width: int, height: int) -> np.ndarray:
    """(N, 2) float64 (x, y) points of a ``width`` x ``height`` image (pixel edges at integers) in that image turned by
    ``np.rot90(image, turns)`` (counter-clockwise on screen, ``turns`` quarter turns): exact, no interpolation; the
    inverse is ``turns = -turns`` on the turned image's width and height."""
    x, y = np.asarray(points, np.float64).reshape(-1, 2).T
    k = int(turns) % 4
    out = (x, y) if k == 0 else (y, width - x) if k == 1 else (width - x, height - y) if k == 2 else (height - y, x)
    return np.stack(out, axis=1)


def turn_detections(dets: Sequence[Any], turns: int, width: int, height: int) -> list[tuple[Box, float, Any]]:
    """Detections ``(box, score, landmarks or None)`` made on ``np.rot90(image, turns)`` (``width`` x ``height``: the
    turned image's size) mapped back to the image: boxes and landmarks turned back exactly, landmarks kept in their
    order (a turn does not mirror: the first is still the person's right eye)."""
    out = []
    for box, score, lm in dets:
        corners = turn_points(np.reshape(box, (2, 2)), -turns, width, height)
        (x1, y1), (x2, y2) = corners.min(axis=0), corners.max(axis=0)
        back = None if lm is None else turn_points(lm, -turns, width, height).astype(np.float32)
        out.append(((float(x1), float(y1), float(x2), float(y2)), score, back))
    return out


ORIENTATION_OVERLAP = SECOND_CHANCE_OVERLAP
"""Detections from different turns of the image that overlap by more than this share of the smaller box are the same
face (:class:`AnyOrientation` keeps one of them)."""


class AnyOrientation:
    """A detector for faces turned on their side or upside down (a photo whose EXIF orientation is missing or wrong):
    the wrapped detector runs on the image and on its three quarter turns (``np.rot90``: exact), every detection is
    turned back (:func:`turn_detections`), and detections from different turns that overlap (by more than
    :data:`ORIENTATION_OVERLAP` of the smaller box) are one face, of which one detection is kept. The kept landmarks
    give the face's roll, near 90, 180 or -90 degrees for a turned face, so the parser turns its crop upright.

    Which one (:meth:`keep`): a face's detections are sorted by the quarter turn their roll implies
    (:func:`upright_turn`), one per orientation, preferably the one made on the turn where the face stands upright
    (its landmarks are the most precise). Where they disagree about the orientation, ``evidence`` decides: the
    orientation whose upright crop shows the most face parts (:func:`parse_evidence`). A face found neither on the
    image itself nor on the turn that stands most of its faces upright (:func:`photo_turn`: the photo's upright turn)
    is kept only if its ``evidence`` is positive (the parser sees a face in it). Without ``evidence`` the best score
    decides and nothing is dropped. Measured in docs/detection.md ("Faces turned by quarter turns").

    Args:
        detector: a detector with landmarks (:class:`MTCNNDetector`, or a :class:`SecondChance` around one).
        evidence: ``evidence(image, detection) -> float``, > 0 where the detection's upright crop shows a face, the
            larger the clearer (:func:`parse_evidence`), or None.
    """

    def __init__(self, detector: Any, evidence: Callable[[np.ndarray, Any], float] | None = None):
        if not callable(detector) or isinstance(detector, HaarDetector):
            raise TypeError(
                f"detector: expected a detector with landmarks (MTCNN), got {type(detector).__name__}: a turned face "
                "is turned upright by its landmarks"
            )
        if evidence is not None and not callable(evidence):
            raise TypeError(f"evidence: expected a callable (image, detection) -> float, got {type(evidence).__name__}")
        self.detector = detector
        self.evidence = evidence

    def __repr__(self) -> str:
        return f"AnyOrientation({self.detector!r})"

    @property
    def framing(self) -> Any:
        return getattr(self.detector, "framing", None)

    def turned(self, image: np.ndarray) -> list[list[tuple[Box, float, Any]]]:
        """The detections of each quarter turn of ``image`` (``np.rot90(image, k)``, k = 0-3), mapped back to it. The
        image itself gets the whole detector; its turns get MTCNN's framed second look (:data:`FRAME_MARGIN`) only
        where no turn found a face (it would double their cost)."""
        image = _check_image(image)
        first, framed = _passes(self.detector)
        out = [self._turn(image, 0, self.detector)] + [self._turn(image, k, first) for k in (1, 2, 3)]
        if framed is not None and not any(out):
            out[1:] = [self._turn(image, k, framed) for k in (1, 2, 3)]
        return out

    @staticmethod
    def _turn(image: np.ndarray, k: int, detect: Detector) -> list[tuple[Box, float, Any]]:
        """``detect``'s detections on ``np.rot90(image, k)``, mapped back to ``image``."""
        check_deadline()
        turned = np.ascontiguousarray(np.rot90(image, k))
        dets = [detection(d, "detector") for d in detect(turned)]
        if any(lm is None for _, _, lm in dets):
            raise ValueError("detector: gave a face without landmarks; a turned face needs them (use MTCNN)")
        return turn_detections(dets, k, turned.shape[1], turned.shape[0])

    def __call__(self, image: np.ndarray) -> list[tuple[Box, float, Any]]:
        image = _check_image(image)
        per_turn = self.turned(image)
        trusted = {0, photo_turn(per_turn)}
        kept = []
        for group in same_faces(per_turn):
            check_deadline()
            item = self.keep(image, group, trusted)
            if item is not None:
                kept.append(item)
        return [d for _, _, d in sorted(kept, key=lambda t: t[:2])]

    def keep(
        self, image: np.ndarray, group: Sequence[tuple[int, int, Any]], trusted: Container[int] = (0,)
    ) -> tuple[int, int, Any] | None:
        """The ``(turn, index, detection)`` kept of one face's detections (:func:`same_faces`), or None; a face found
        on none of the ``trusted`` turns needs positive evidence."""
        reps = orientations(group)
        found = any(k in trusted for k, _, _ in group)  # on the photo as it is (as without the option) or upright
        if self.evidence is None or (found and len(reps) == 1):
            return max(reps, key=lambda t: t[2][1])
        weighed = [(self.evidence(image, t[2]), t[2][1], t) for t in reps]
        shown, _, best = max(weighed, key=lambda w: w[:2])
        return best if shown > 0 or found else None


def _passes(detector: Any) -> tuple[Detector, Detector | None]:
    """An :class:`MTCNNDetector`'s first pass and its framed second look (a detector's call is the first, else the
    second); any other detector whole, and None."""
    if not isinstance(detector, MTCNNDetector) or not detector.frame_margin:
        return detector, None

    def first(image: np.ndarray) -> list[tuple[Box, float, np.ndarray]]:
        return detector._detect(image, detector.min_face, detector.thresholds)

    def framed(image: np.ndarray) -> list[tuple[Box, float, np.ndarray]]:
        return detector._detect(image, detector.min_face, detector.thresholds, margin=detector.frame_margin)

    return first, framed


def photo_turn(per_turn: Sequence[Sequence[Any]]) -> int:
    """The quarter turn (0-3) of a photo that stands most of its faces upright: the turn with the most detections made
    upright on it (:func:`upright_turn` equal to the turn; ``per_turn``: each turn's detections mapped back); on a tie
    the photo as it is (0), then the larger sum of their scores."""

    def votes(k: int) -> tuple[int, bool, float]:
        upright = [d[1] for d in per_turn[k] if upright_turn(d[2]) == k]
        return len(upright), k == 0, sum(upright)

    return max(range(len(per_turn)), key=votes)


def upright_turn(landmarks: Any) -> int:
    """The quarter turns ``k`` of ``np.rot90(image, k)`` that stand a face of these landmarks upright: its roll
    (:func:`roll_degrees`) to the nearest multiple of 90 degrees, over 90, modulo 4."""
    return int(quarter_turn(roll_degrees(landmarks)) // 90) % 4


def orientations(group: Sequence[tuple[int, int, Any]]) -> list[tuple[int, int, Any]]:
    """One ``(turn, index, detection)`` of a face's detections (the best score first) per orientation
    (:func:`upright_turn`): the one made on the turn that stands it upright if any, else the best-scoring."""
    reps: dict[int, tuple[int, int, Any]] = {}
    for item in group:
        up = upright_turn(item[2][2])
        if up not in reps or (item[0] == up and reps[up][0] != up):
            reps[up] = item
    return list(reps.values())


def same_faces(per_turn: Sequence[Sequence[Any]]) -> list[list[tuple[int, int, Any]]]:
    """Detections of the turns of one image (mapped back to it), grouped by face: ``[(turn, index, detection), ...]``
    per face, the best score first, the faces by their best score. Two detections of different turns that overlap by
    more than :data:`ORIENTATION_OVERLAP` of the smaller box are the same face, the most alike pairs (intersection over
    union) first, as long as a face holds at most one detection of each turn (those of one turn are different faces:
    the detector kept them apart)."""
    items = [(k, i, d) for k, dets in enumerate(per_turn) for i, d in enumerate(dets)]
    pairs = sorted(
        (-box_overlap(items[a][2][0], items[b][2][0]), a, b)
        for a in range(len(items))
        for b in range(a + 1, len(items))
        if items[a][0] != items[b][0] and box_overlap(items[a][2][0], items[b][2][0], "min") > ORIENTATION_OVERLAP
    )
    face = list(range(len(items)))  # each detection's face: the index of one of its detections
    for _, a, b in pairs:
        fa, fb = face[a], face[b]
        both = [m for m in range(len(items)) if face[m] in (fa, fb)]
        if fa != fb and len({items[m][0] for m in both}) == len(both):
            face = [fa if f == fb else f for f in face]
    groups = [[items[m] for m in range(len(items)) if face[m] == f] for f in dict.fromkeys(face)]
    groups = [sorted(g, key=lambda t: (-t[2][1], t[0], t[1])) for g in groups]
    return sorted(groups, key=lambda g: (-g[0][2][1], g[0][0], g[0][1]))


class SecondChance:
    """An MTCNN detector with a second chance for the faces it misses: every :meth:`MTCNNDetector.candidates` box
    that overlaps no face found (by more than :data:`SECOND_CHANCE_OVERLAP`) is kept if ``accept(image, detection)``
    says it is a face (:func:`parse_check`: the face parser sees a nose and another face part in it). Measured
    in docs/detection.md ("Second chances for missed faces"): more turned, rolled and small faces found, no false box
    added; the near profile is still missed.

    Args:
        detector: the :class:`MTCNNDetector` of the first pass and of the candidates.
        accept: ``accept(image, (box, score, landmarks)) -> bool``.
    """

    def __init__(self, detector: MTCNNDetector, accept: Callable[[np.ndarray, Any], bool]):
        if not callable(getattr(detector, "candidates", None)):
            raise TypeError(f"detector: expected an MTCNNDetector (with candidates()), got {type(detector).__name__}")
        if not callable(accept):
            raise TypeError(f"accept: expected a callable (image, detection) -> bool, got {type(accept).__name__}")
        self.detector = detector
        self.accept = accept

    def __repr__(self) -> str:
        return f"SecondChance({self.detector!r})"

    @property
    def framing(self) -> Any:
        return self.detector.framing

    def __call__(self, image: np.ndarray) -> list[tuple[Box, float, np.ndarray]]:
        image = _check_image(image)
        found = list(self.detector(image))
        for det in self.detector.candidates(image):
            check_deadline()
            new = all(box_overlap(det[0], f[0], "min") <= SECOND_CHANCE_OVERLAP for f in found)
            if new and self.accept(image, det):
                found.append(det)
        return found


def face_parts_share(
    labels: np.ndarray, confidence: np.ndarray, classes: Sequence[str], centre: float = 1.0, min_confidence: float = 0.8
) -> dict[str, float]:
    """The share of a parse's central square (``centre`` times its side) that each of :data:`FACE_PARTS` covers,
    counting only pixels of confidence >= ``min_confidence`` (arguments as :func:`face_parts_found`)."""
    labels, confidence = np.asarray(labels), np.asarray(confidence)
    if labels.ndim != 2 or labels.shape != confidence.shape:
        raise ValueError(f"labels, confidence: expected two (H, W) arrays, got {labels.shape} and {confidence.shape}")
    if not 0 < centre <= 1:
        raise ValueError(f"centre: expected a fraction of the side in (0, 1], got {centre}")
    h, w = labels.shape
    my, mx = round(h * (1 - centre) / 2), round(w * (1 - centre) / 2)
    inner = labels[my : h - my, mx : w - mx][confidence[my : h - my, mx : w - mx] >= min_confidence]
    counts = np.bincount(inner.ravel(), minlength=len(classes)) / max(1, (h - 2 * my) * (w - 2 * mx))
    return {p: float(sum(counts[classes.index(c)] for c in names if c in classes)) for p, names in FACE_PARTS.items()}


def face_parts_found(
    labels: np.ndarray,
    confidence: np.ndarray,
    classes: Sequence[str],
    centre: float = 1.0,
    min_confidence: float = 0.8,
    min_nose: float = 0.01,
    min_part: float = 0.002,
    min_parts: int = 2,
) -> bool:
    """Whether a parse of a face crop shows a face: in its central square (``centre`` times its side: the
    detection box in the crop window), counting only pixels of confidence >= ``min_confidence``, the nose covers at
    least ``min_nose`` and at least ``min_parts`` of the :data:`FACE_PARTS` (nose, eyes, brows, mouth) each cover
    at least ``min_part``. Skin alone is no evidence: the parser calls fur, gravel and wheels skin.

    Args:
        labels, confidence: (H, W) class indices into ``classes`` and their probabilities (e.g. a 64 x 64
            ``FaceParser.parse_aligned(crop, size=64, return_probs=True)``).
        classes: the class names of ``labels``.
    """
    share = face_parts_share(labels, confidence, tuple(classes), centre, min_confidence)
    return _enough_parts(share, min_nose, min_part, min_parts)


def _enough_parts(share: dict[str, float], min_nose: float = 0.01, min_part: float = 0.002, min_parts: int = 2) -> bool:
    """:func:`face_parts_found`'s rule on the shares of :func:`face_parts_share`."""
    return share["nose"] >= min_nose and sum(v >= min_part for v in share.values()) >= min_parts


def parse_check(
    parse: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], classes: Sequence[str], framing: Any = None
) -> Callable[[np.ndarray, Any], bool]:
    """``accept(image, detection)`` for :class:`SecondChance`: the detection's crop window (``framing``, default
    :data:`~fpliif.infer.framing.MTCNN_FRAMING`, rolled by its landmarks), cut out and given to
    ``parse(crop) -> (labels, confidence)``, passes :func:`face_parts_found`."""
    shown = parse_evidence(parse, classes, framing)
    return lambda image, det: shown(image, det) > 0


def parse_evidence(
    parse: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], classes: Sequence[str], framing: Any = None
) -> Callable[[np.ndarray, Any], float]:
    """``evidence(image, detection)`` for :class:`AnyOrientation`: the detection's crop window (``framing``, default
    :data:`~fpliif.infer.framing.MTCNN_FRAMING`, rolled by its landmarks: a turned face stands upright in it), cut out
    and given to ``parse(crop) -> (labels, confidence)``: the share of the window's central square (the box) that
    confident face parts cover (:func:`face_parts_share`, all parts together), or 0.0 where
    :func:`face_parts_found` says it shows no face."""
    from .framing import MTCNN_FRAMING
    from .geometry import extract_crop

    framing = framing or MTCNN_FRAMING
    classes = tuple(classes)

    def evidence(image: np.ndarray, det: Any) -> float:
        box, _, lm = det
        win = framing.window(box, roll_degrees(lm), nose_point(lm))
        labels, confidence = parse(extract_crop(image, win))
        share = face_parts_share(labels, confidence, classes, centre=1 / framing.scale)
        return sum(share.values()) if _enough_parts(share) else 0.0

    return evidence


def _is_box(b: Any) -> bool:
    try:
        return len(b) == 4 and all(isinstance(v, (int, float, np.integer, np.floating)) for v in b)
    except TypeError:
        return False


def detection(d: Any, name: str) -> tuple[tuple[float, float, float, float], float, np.ndarray | None]:
    """A box, ``(box, score)`` or ``(box, score, landmarks)`` -> (box floats, score, (5, 2) float32 or None)."""
    lm = None
    if _is_box(d):
        box, score = d, 1.0
    elif isinstance(d, (list, tuple)) and len(d) in (2, 3) and _is_box(d[0]):
        box, score = d[0], d[1]
        lm = d[2] if len(d) == 3 else None
    else:
        raise ValueError(
            f"{name}: expected boxes [x1, y1, x2, y2] (or (box, score) / (box, score, landmarks)), got {d!r}"
        )
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"{name}: box {list(box)} must have finite coordinates")
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"{name}: box {list(box)} must have x2 > x1 and y2 > y1")
    if lm is not None:
        lm = np.asarray(lm, np.float32)
        if lm.size != 10 or not np.isfinite(lm).all():
            raise ValueError(f"{name}: landmarks must be 5 finite (x, y) points, got shape {lm.shape}")
        lm = lm.reshape(5, 2)
    return (x1, y1, x2, y2), float(score), lm


def _box_list(boxes: Any, name: str) -> list[tuple[tuple[float, float, float, float], float, Any]] | None:
    if boxes is None:
        return None
    items = boxes.tolist() if isinstance(boxes, np.ndarray) else boxes
    return [detection(b, name) for b in items]


MAX_BOX_SIDE = 2.0
"""A box given to a parse call may be at most this many times the image's longer side (a face box around a face
in the image; its crop window is cut at the image's pixel scale, so a far larger box would only cost memory)."""


def check_box_fits(box: tuple[float, float, float, float], width: int, height: int, name: str) -> None:
    """ValueError naming ``name`` if a side of ``box`` is over :data:`MAX_BOX_SIDE` times the image's longer side."""
    side = max(box[2] - box[0], box[3] - box[1])
    if side > MAX_BOX_SIDE * max(width, height):
        raise ValueError(
            f"{name}: box {[round(v, 1) for v in box]} is {side:.0f} px across, over {MAX_BOX_SIDE:g}x the longer "
            f"side of the {width}x{height} image; pass a box around a face in the image"
        )


def check_boxes(boxes: Any, n: int, single: bool) -> list[Any]:
    """Boxes given to a parse call, one entry per image (None: detect there), each checked by :func:`detection`."""
    if boxes is None:
        return [None] * n
    if single:
        return [_box_list(boxes, "boxes")]
    if not isinstance(boxes, Sequence) or len(boxes) != n:
        raise ValueError(f"boxes: for {n} images pass a list of {n} box lists (or None entries to detect)")
    return [_box_list(b, f"boxes[{i}]") for i, b in enumerate(boxes)]
