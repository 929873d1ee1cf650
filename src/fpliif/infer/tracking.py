"""Temporal smoothing of face detections in a video: tracks by IoU, One-Euro filters on boxes and landmarks.

A detector's boxes and landmarks jitter by a few pixels from frame to frame, and so does every crop window and
label edge of a parse (unusable for video editing). :class:`FaceTracker` links each frame's detections to the
previous frame's faces (greedy, highest box IoU first, at least ``iou``) and smooths each face's box and
landmarks with a One-Euro filter (Casiez, Roussel and Vogel, *1 Euro Filter: A Simple Speed-based Low-pass
Filter for Noisy Input in Interactive Systems*, CHI 2012): a low-pass filter whose cutoff rises with the
speed of the signal, so a still face is held steady and a moving one followed without lag. Coordinates are
filtered in units of the face's size, so the same settings serve small and large faces. The filter approaches a
new still position only geometrically, moving the face window by a fraction of a pixel in every frame, and each
such move can flip pixels of an unsure region. So what was last passed on is passed on again while the new
detection lies within ``hold`` (a share of the face's size) of it, and the filtered value otherwise: a still
shot settles to one window, and a face that moves is followed as before, coming to rest within ``hold`` of
where it stopped. A detection that
overlaps no tracked face (a new face, or one that jumped further than its own size) starts a new track and
is passed on unsmoothed. No torch here.

    tracker = FaceTracker(fps=25)
    for frame in frames:
        result = parser(frame, boxes=tracker(parser.detect(frame)))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .detect import box_overlap

SmoothDetection = tuple[tuple[float, float, float, float], float, "np.ndarray | None"]


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


class OneEuro:
    """The One-Euro filter of a vector signal sampled every ``dt`` seconds. One cutoff for all components, from
    their root-mean-square speed: a face moves all its coordinates together, its jitter moves them independently.

    Args:
        min_cutoff: cutoff frequency (Hz) of a still signal: lower = steadier, more lag when it starts moving.
        beta: how fast the cutoff rises with the signal's speed (Hz per unit of the signal per second).
        d_cutoff: cutoff frequency (Hz) of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 1.0, d_cutoff: float = 1.0):
        self.min_cutoff = _positive(min_cutoff, "min_cutoff")
        self.beta = float(beta)
        self.d_cutoff = _positive(d_cutoff, "d_cutoff")
        self.value: np.ndarray | None = None
        self.speed: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * dt))

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        """The filtered value of the new sample ``x`` (the first sample passes unchanged)."""
        x = np.asarray(x, np.float64)
        if self.value is None:
            self.value, self.speed = x.copy(), np.zeros_like(x)
            return x.copy()
        raw_speed = (x - self.value) / dt
        a = self._alpha(self.d_cutoff, dt)
        self.speed = a * raw_speed + (1 - a) * self.speed
        a = self._alpha(self.min_cutoff + self.beta * float(np.sqrt(np.mean(self.speed**2))), dt)
        self.value = a * x + (1 - a) * self.value
        return self.value.copy()


class _Track:
    """One face across frames: its filter over ``[box, landmarks]`` in units of the face's first size."""

    def __init__(self, box: np.ndarray, landmarks: np.ndarray | None, filt: OneEuro, hold: float = 0.0):
        self.filter = filt
        self.hold = hold
        self.held: np.ndarray | None = None  # what was last passed on, in units of the face's size
        self.has_landmarks = landmarks is not None
        self.size = max(float(((box[2] - box[0]) + (box[3] - box[1])) / 2), 1.0)
        self.missed = 0
        self.update(box, landmarks, 1.0)

    def update(self, box: np.ndarray, landmarks: np.ndarray | None, dt: float) -> np.ndarray | None:
        """Filter the new detection; sets the smoothed box and returns the smoothed landmarks (or None)."""
        raw = (box if landmarks is None else np.concatenate([box, landmarks.reshape(-1)])) / self.size
        value = self.filter(raw, dt)
        if self.held is None or np.abs(raw - self.held).max() > self.hold:  # the face moved: follow the filter
            self.held = value
        out = self.held * self.size
        self.box = out[:4]
        self.missed = 0
        return None if landmarks is None else out[4:].reshape(-1, 2).astype(np.float32)


class FaceTracker:
    """Smooths a video's face detections frame by frame (see the module docstring); call once per frame.

    Args:
        fps: frames per second of the video (the filters' time step).
        min_cutoff, beta, d_cutoff: the :class:`OneEuro` settings (``beta`` per face size per second). The
            defaults were chosen on a synthetic 25 fps sequence (tests/test_tracking.py): jitter of 1.5 % of the
            face size drops to 40 % of it; a step of a quarter face size is 77 % followed in the first frame and
            99 % by the third; a face panning at 2 % of its size per frame lags by 1 % of its size.
        iou: least box IoU between a tracked face and a detection to count as the same face.
        max_missed: frames a face may go undetected before its track is dropped.
        hold: the last box and landmarks passed on are kept while every coordinate of the new detection lies
            within this share of the face's size of them (0: the filtered value every frame); see the module
            docstring. 0.005 is half a pixel on a 100-pixel face.
    """

    def __init__(
        self,
        fps: float = 25.0,
        min_cutoff: float = 0.5,
        beta: float = 10.0,
        d_cutoff: float = 1.0,
        iou: float = 0.3,
        max_missed: int = 2,
        hold: float = 0.005,
    ):
        self.dt = 1.0 / _positive(fps, "fps")
        self.settings = (min_cutoff, beta, d_cutoff)
        OneEuro(*self.settings)  # checks them
        if not 0 < iou <= 1:
            raise ValueError(f"iou: expected a value in (0, 1], got {iou!r}")
        self.iou = float(iou)
        self.max_missed = int(max_missed)
        if isinstance(hold, bool) or not isinstance(hold, (int, float, np.integer, np.floating)) or not hold >= 0:
            raise ValueError(f"hold: expected a number >= 0, got {hold!r}")
        self.hold = float(hold)
        self.tracks: list[_Track] = []

    def __call__(self, detections: Sequence[Any]) -> list[SmoothDetection]:
        """This frame's detections (``(box, score[, landmarks])``, as :meth:`FaceParser.detect` returns) ->
        the same faces, in the same order, with smoothed boxes and landmarks."""
        dets = [_parts(d) for d in detections]
        pairs = sorted(
            ((box_overlap(t.box, d[0]), ti, di) for ti, t in enumerate(self.tracks) for di, d in enumerate(dets)),
            reverse=True,
        )
        track_of: dict[int, _Track] = {}
        used: set[int] = set()
        for overlap, ti, di in pairs:
            if overlap < self.iou:
                break
            if ti in used or di in track_of or self.tracks[ti].has_landmarks != (dets[di][2] is not None):
                continue
            used.add(ti)
            track_of[di] = self.tracks[ti]
        out: list[SmoothDetection] = []
        for di, (box, score, landmarks) in enumerate(dets):
            track = track_of.get(di)
            if track is None:
                track = _Track(box, landmarks, OneEuro(*self.settings), self.hold)
                self.tracks.append(track)
                used.add(len(self.tracks) - 1)
                lm = None if landmarks is None else landmarks.astype(np.float32)
            else:
                lm = track.update(box, landmarks, self.dt)
            out.append((tuple(float(v) for v in track.box), score, lm))
        for ti, t in enumerate(self.tracks):
            if ti not in used:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return out


def _parts(d: Any) -> tuple[np.ndarray, float, np.ndarray | None]:
    """``(box, score)`` or ``(box, score, landmarks)`` -> (box (4,) float64, score, (5, 2) float64 or None)."""
    box, score = np.asarray(d[0], np.float64).reshape(4), float(d[1])
    lm = d[2] if len(d) > 2 else None
    return box, score, None if lm is None else np.asarray(lm, np.float64).reshape(-1, 2)
