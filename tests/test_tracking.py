"""Temporal smoothing of face detections (FaceTracker, One-Euro) and live video sources."""

from __future__ import annotations

import numpy as np
import pytest

from fpliif.cli import main
from fpliif.infer.detect import box_overlap as box_iou
from fpliif.infer.tracking import FaceTracker, OneEuro
from fpliif.infer.video import is_stream, read_frames

BOX = np.array([100.0, 100.0, 200.0, 200.0])  # a 100 px face
LM = np.array([[130, 140], [170, 140], [150, 160], [135, 180], [165, 180]], np.float64)


def face(shift: float = 0.0, noise: np.ndarray | None = None) -> tuple:
    n = np.zeros(14) if noise is None else noise
    return (BOX + shift + n[:4], 0.99, LM + shift + n[4:].reshape(5, 2))


def flatten(det: tuple) -> np.ndarray:
    return np.concatenate([np.asarray(det[0]), np.asarray(det[2]).reshape(-1)])


def test_jitter_of_a_still_face_is_reduced():
    rng = np.random.default_rng(0)
    tracker = FaceTracker(fps=25)
    raw, smooth = [], []
    for t in range(150):
        noise = rng.normal(0, 1.5, 14)  # 1.5 % of the face size
        (det,) = tracker([face(0, noise)])
        if t >= 20:
            raw.append(noise)
            smooth.append(flatten(det) - flatten(face()))
    ratio = np.std(smooth) / np.std(raw)
    assert ratio < 0.5, ratio
    assert np.abs(np.mean(smooth)) < 0.3  # no bias


def test_a_real_move_is_followed_without_lag():
    tracker = FaceTracker(fps=25)
    for _ in range(30):
        tracker([face()])
    errors = [abs(tracker([face(25)])[0][0][0] - (BOX[0] + 25)) for _ in range(4)]  # a quarter face size
    assert errors[0] < 0.35 * 25 and errors[2] < 1.0 and errors[3] < errors[2] + 1e-9
    (jumped,) = tracker([face(300)])  # further than its own size: a new track, passed on as detected
    assert np.allclose(flatten(jumped), flatten(face(300)))
    panning = FaceTracker(fps=25)
    for t in range(60):  # 2 px per frame, steadily
        (det,) = panning([face(2.0 * t)])
    assert abs(det[0][0] - (BOX[0] + 2.0 * 59)) < 1.5


def test_faces_keep_their_tracks_in_any_order_and_new_faces_pass_unchanged():
    tracker = FaceTracker(fps=25)
    other = (BOX + 400, 0.9, None)  # a second face, without landmarks
    for _ in range(10):
        tracker([face(), other])
    out = tracker([(BOX + 400 + 3, 0.9, None), face(3)])  # both moved by 3 px, listed in the other order
    assert out[1][2] is not None and out[0][2] is None
    assert 400 < out[0][0][0] - BOX[0] < 403 and 0 < out[1][0][0] - BOX[0] < 3  # each smoothed on its own track
    assert len(tracker.tracks) == 2
    for _ in range(3):  # gone for more than max_missed frames: dropped
        tracker([face()])
    assert len(tracker.tracks) == 1
    (back,) = tracker([(BOX + 403, 0.9, None), face()])[:1]
    assert np.allclose(back[0], BOX + 403)  # a new track: unsmoothed
    assert tracker([]) == []


def test_settings_are_checked():
    with pytest.raises(ValueError, match="fps"):
        FaceTracker(fps=0)
    with pytest.raises(ValueError, match="min_cutoff"):
        FaceTracker(min_cutoff=-1)
    with pytest.raises(ValueError, match="iou"):
        FaceTracker(iou=1.5)
    f = OneEuro()
    assert np.array_equal(f(np.array([1.0, 2.0]), 0.04), [1.0, 2.0])  # the first sample passes unchanged
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)


def test_live_sources_fail_with_a_clear_error(tmp_path, capsys):
    assert is_stream("0") and is_stream("rtsp://cam.local/live") and not is_stream("clip.mp4")
    with pytest.raises(ValueError, match="camera 99: OpenCV cannot open it"):
        read_frames("99")
    with pytest.raises(ValueError, match="stream http://127.0.0.1:1/x.mp4: OpenCV cannot open it"):
        read_frames("http://127.0.0.1:1/x.mp4")  # connection refused at once
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_frames(tmp_path / "nope.mp4")
    assert main(["parse", "--video", "99", "--out", str(tmp_path / "out")]) == 1
    assert "failed 99: camera 99: OpenCV cannot open it" in capsys.readouterr().err


def test_read_frames_stops_at_max_frames(tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(5):
        w.write(np.full((24, 32, 3), 40 * i, np.uint8))
    w.release()
    frames, fps, count = read_frames(path, max_frames=3)
    assert fps == 10 and count == 3 and len(list(frames)) == 3
