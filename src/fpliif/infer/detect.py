"""Offline face detection for in-the-wild photos: OpenCV Haar cascades (the models ship inside opencv-python).

A detector is any callable ``detector(image_rgb_uint8 (H, W, 3)) -> list[(box, score)]`` with ``box`` =
``(x1, y1, x2, y2)`` in image pixels (floats; x2/y2 exclusive) and ``score`` a float (higher = more
face-like). :class:`HaarDetector` is the default; pass your own (e.g. a wrapper around a CNN detector)
to :class:`fpliif.FaceParser` via ``detector=``. This module does not import torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

Box = tuple[float, float, float, float]
Detection = tuple[Box, float]
Detector = Callable[[np.ndarray], Sequence[Detection]]

FRONTAL = "haarcascade_frontalface_default.xml"
PROFILE = "haarcascade_profileface.xml"


def _cascade(name: str):
    import cv2

    path = os.path.join(cv2.data.haarcascades, name)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"cannot load the OpenCV Haar cascade {path}")
    return cascade


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (optionally plus the profile cascade, both mirror directions).

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
        self.max_side = int(max_side)
        self._frontal = None
        self._profile = None

    def __repr__(self) -> str:
        return (
            f"HaarDetector(min_face={self.min_face}, scale_factor={self.scale_factor}, "
            f"min_neighbors={self.min_neighbors}, min_score={self.min_score}, profile={self.profile})"
        )

    def _run(self, cascade, gray: np.ndarray, min_px: int) -> list[Detection]:
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

    def __call__(self, image: np.ndarray) -> list[Detection]:
        import cv2

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"detector: expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}"
            )
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(
                gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
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
        dets = [((x1 / scale, y1 / scale, x2 / scale, y2 / scale), s) for (x1, y1, x2, y2), s in dets]
        return suppress_nested([d for d in dets if d[1] >= self.min_score])


def suppress_nested(dets: Sequence[Detection], overlap: float = 0.3) -> list[Detection]:
    """Greedy suppression, best score first: drop a box whose area overlaps a kept box by more than
    ``overlap`` of the smaller box's area (Haar often adds small boxes on a chin or neck inside a face)."""
    kept: list[Detection] = []
    for box, score in sorted(dets, key=lambda d: -d[1]):
        if all(_overlap_small(box, k[0]) <= overlap for k in kept):
            kept.append((box, score))
    return kept


def _overlap_small(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / small if small > 0 else 0.0
