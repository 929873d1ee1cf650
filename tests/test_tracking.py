"""Temporal smoothing of face detections (FaceTracker, One-Euro) and live video sources."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fpliif import FaceParser
from fpliif.cli import main
from fpliif.infer.detect import box_overlap as box_iou
from fpliif.infer.tracking import FaceTracker, OneEuro
from fpliif.infer.video import is_stream, read_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
try:
    import measure_video
finally:
    sys.path.pop(0)

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


def test_a_still_face_settles_to_one_window_instead_of_creeping():
    """The first frame detected 0.4 px off, then the same detection every frame: without ``hold`` the filter creeps
    towards it by a fraction of a pixel in every frame (each move can flip unsure pixels); with it the window
    stops changing after the first frame."""

    def run(hold: float) -> list[np.ndarray]:
        tracker = FaceTracker(fps=25, hold=hold)
        return [flatten(tracker([face(0.4 if t == 0 else 0.0)])[0]) for t in range(12)]

    creeping, held = run(0.0), run(0.005)
    assert all(not np.array_equal(a, b) for a, b in zip(creeping[1:], creeping[2:], strict=False))
    assert all(np.array_equal(held[1], h) for h in held[1:])
    assert np.abs(held[1] - flatten(face())).max() <= 0.5  # within the hold (0.5 px on this 100 px face)


def test_held_faces_still_follow_slow_and_fast_moves():
    slow = FaceTracker(fps=25)
    for t in range(100):  # 0.1 px per frame: the window follows in steps, lagging by about the hold at most
        (det,) = slow([face(0.1 * t)])
        assert abs(det[0][0] - (BOX[0] + 0.1 * t)) < 1.5
    fast = FaceTracker(fps=25)
    for _ in range(30):
        fast([face()])
    assert abs(fast([face(25)])[0][0][0] - (BOX[0] + 25)) < 0.35 * 25


def test_settings_are_checked():
    with pytest.raises(ValueError, match="fps"):
        FaceTracker(fps=0)
    with pytest.raises(ValueError, match="min_cutoff"):
        FaceTracker(min_cutoff=-1)
    with pytest.raises(ValueError, match="iou"):
        FaceTracker(iou=1.5)
    for bad in (-0.1, True, "0.01"):
        with pytest.raises(ValueError, match="hold"):
            FaceTracker(hold=bad)
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


def flat_clip(path):
    """A 5-frame 10 fps MJPG clip of flat grey frames (32 x 24) at ``path``."""
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(5):
        w.write(np.full((24, 32, 3), 40 * i, np.uint8))
    w.release()
    return path


def test_read_frames_stops_at_max_frames(tmp_path):
    frames, fps, count = read_frames(flat_clip(tmp_path / "clip.avi"), max_frames=3)
    assert fps == 10 and count == 3 and len(list(frames)) == 3


@pytest.fixture
def http_clip(tmp_path):
    """(URL, port) of :func:`flat_clip` served over HTTP on localhost: a stream OpenCV's FFmpeg backend opens."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    flat_clip(tmp_path / "clip.avi")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    yield f"http://127.0.0.1:{port}/clip.avi", port
    server.shutdown()
    server.server_close()


def test_a_stream_url_is_read_and_parsed(http_clip, tiny_weights, tmp_path):
    url, port = http_clip
    frames, fps, count = read_frames(url)
    assert count == -1 and fps == 10 and len(list(frames)) == 5  # a stream: its length is not asked for
    out = tmp_path / "out"
    args = ["parse", "--video", url, "--out", str(out), "--weights", str(tiny_weights), "--format", "json"]
    assert main([*args, "--max-frames", "3", "--quiet"]) == 0
    stem = f"http_127.0.0.1_{port}_clip.avi"  # the URL, characters other than A-Za-z0-9._- as "_"
    assert len(list((out / f"{stem}_labels").glob("*.png"))) == 3 and (out / f"{stem}_overlay.mp4").is_file()
    doc = json.loads((out / f"{stem}.json").read_text())
    assert doc["video"] == url and [f["frame"] for f in doc["frames"]] == [0, 1, 2]


def test_inputs_without_faces_are_reported_once_each_not_per_frame(tiny_weights, tmp_path, capsys, caplog):
    from PIL import Image

    clip = flat_clip(tmp_path / "flat.avi")
    Image.new("RGB", (40, 30), (90, 90, 90)).save(tmp_path / "flat.png")
    args = ["--out", str(tmp_path / "out"), "--weights", str(tiny_weights)]
    assert main(["parse", str(clip), "--video", *args]) == 0
    assert main(["parse", str(tmp_path / "flat.png"), *args]) == 0
    err = capsys.readouterr().err
    assert err.count("no face detected") == 2 and f"{clip}: no face detected in 5 of 5 frames" in err
    assert f"{tmp_path / 'flat.png'}: no face detected" in err
    assert "no face" not in caplog.text  # the parser's own warning is left to the command's report
    FaceParser(tiny_weights)(np.full((30, 40, 3), 90, np.uint8))  # after the command: the library warns
    assert "no face detected in image (40x30)" in caplog.text


def test_a_digit_name_is_a_camera_unless_such_a_file_exists(tmp_path, monkeypatch):
    from fpliif.infer.cli_files import plan_jobs

    monkeypatch.chdir(tmp_path)
    (job,), errors = plan_jobs(["3"], tmp_path / "out", video=True)
    assert not errors and job.source == "3" and job.key.name == "camera3"
    flat_clip(tmp_path / "clip.avi").rename(tmp_path / "3")  # a video file named "3"
    (job,), errors = plan_jobs(["3"], tmp_path / "out", video=True)
    assert not errors and job.source is None and job.path.name == "3"
    assert plan_jobs(["7"], tmp_path / "out", video=False) == ([], ["7: no such file or folder"])  # images: no camera


# ---------------------------------------------------------------------------------------------- videos, end to end
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    import torch

    import fpliif
    from conftest import TINY_SPEC

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    fpliif.save(fpliif.make(TINY_SPEC), path, metadata={"input_size": "32"})  # small input: fast tests
    return path


@pytest.fixture(scope="module")
def shaky_clip(tmp_path_factory):
    """12 frames (160 x 160, 25 fps) of the astronaut's head shaken by 1-2 px and +-1 % scale, plus pixel noise."""
    import cv2

    from fpliif.infer.cli import example_image
    from fpliif.infer.images import load_image

    head = cv2.resize(load_image(example_image())[0:300, 100:400], (160, 160), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("v") / "shaky.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 160))
    for _ in range(12):
        dx, dy = rng.choice([-1, 1], 2) * rng.uniform(1, 2, 2)
        m = cv2.getRotationMatrix2D((80, 80), 0, 1 + rng.uniform(-0.01, 0.01))
        m[:, 2] += (dx, dy)
        frame = cv2.warpAffine(head, m, (160, 160), borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        frame = np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def parse_clip(clip, out, weights, *extra) -> list[dict]:
    """``fpliif parse --video`` with JSON output: the per-frame records."""
    import json

    args = ["parse", str(clip), "--video", "--out", str(out), "--weights", str(weights), "--format", "json"]
    assert main([*args, "--no-context", *extra]) == 0
    return json.loads((out / f"{clip.stem}.json").read_text())["frames"]


def test_smoothing_reduces_box_jitter_on_a_shaky_video(shaky_clip, tiny_weights, tmp_path):
    """Boxes of a still face shaken by 1-2 px: the smoothed boxes move less from frame to frame than the raw ones
    (jitter: RMS frame-to-frame change of the box coordinates, in px)."""
    jitter = {}
    for name, extra in (("raw", ["--no-smooth"]), ("smooth", [])):
        frames = parse_clip(shaky_clip, tmp_path / name, tiny_weights, *extra)
        assert [len(f["faces"]) for f in frames] == [1] * 12
        boxes = np.array([f["faces"][0]["box"] for f in frames])
        jitter[name] = float(np.sqrt((np.diff(boxes, axis=0) ** 2).mean()))
    assert jitter["raw"] > 0.5  # the shake reaches the detector
    assert jitter["smooth"] < 0.7 * jitter["raw"], jitter


def test_max_frames(shaky_clip, tiny_weights, tmp_path, capsys):
    frames = parse_clip(shaky_clip, tmp_path / "five", tiny_weights, "--max-frames", "5")
    assert [f["frame"] for f in frames] == list(range(5))
    assert len(list((tmp_path / "five" / f"{shaky_clip.stem}_labels").glob("*.png"))) == 5
    capsys.readouterr()
    for bad in ("0", "-3", "two"):
        with pytest.raises(SystemExit) as e:  # argparse: usage error
            main(["parse", str(shaky_clip), "--video", "--out", str(tmp_path / "x"), "--max-frames", bad])
        assert e.value.code == 2 and "argument --max-frames: expected an integer >= 1" in capsys.readouterr().err
    assert main(["parse", str(shaky_clip), "--out", str(tmp_path / "x"), "--max-frames", "5"]) == 2
    assert "--max-frames limits the frames of --video inputs" in capsys.readouterr().err


def test_a_truncated_video_is_parsed_as_far_as_it_goes_and_says_so(shaky_clip, tiny_weights, tmp_path, capsys):
    cut = tmp_path / "cut.avi"
    data = shaky_clip.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])  # the header still lists 12 frames
    frames = parse_clip(cut, tmp_path / "out", tiny_weights)
    assert 0 < len(frames) < 12
    assert f"read {len(frames)} of the 12 frames its header lists" in capsys.readouterr().err
    parse_clip(shaky_clip, tmp_path / "whole", tiny_weights)
    assert "frames its header lists" not in capsys.readouterr().err
    doc = json.loads((tmp_path / "whole" / "shaky.json").read_text())
    assert doc["label_set"] == "celebamask-hq" and len(doc["classes"]) == 19


# ------------------------------------------------------------------------------------- scripts/measure_video.py
def camera_frames(mats: list, ref: dict, noise: float = 0.0) -> list[dict]:
    """Per-frame records of a face that moves exactly with the camera (plus Gaussian noise on every coordinate)."""
    rng = np.random.default_rng(1)
    frames = []
    for m in mats:
        lm = measure_video.apply(m, ref["landmarks"]) + rng.normal(0, noise, (5, 2))
        (cx, cy), side = measure_video.apply(m, ref["centre"]), math.sqrt(np.linalg.det(m[:2, :2])) * ref["side"]
        box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]) + rng.normal(0, noise, 4)
        frames.append({"faces": [{"box": box.tolist(), "landmarks": lm.tolist()}]})
    return frames


def test_video_measurement_undoes_the_known_camera_motion():
    photo, frame = (512, 400), (160, 120)
    mats = measure_video.camera_path(photo, np.array([200.0, 100.0, 300.0, 200.0]), frame, 48, 48)
    assert all(measure_video.inside(m, photo, frame) for m in mats)
    rolls = [math.degrees(math.atan2(m[1, 0], m[0, 0])) for m in mats]
    assert rolls[0] == pytest.approx(0, abs=1e-9) and max(rolls) == pytest.approx(measure_video.ROLL)
    # landmarks and boxes that move with the camera: no error, no jitter; noisy ones: about the noise
    ref = {"landmarks": LM + 100, "centre": np.array([250.0, 150.0]), "side": 100.0}
    exact = measure_video.track_errors(camera_frames(mats, ref), mats, ref)
    assert np.abs(exact["landmarks"]).max() < 1e-9 and np.abs(exact["box"]).max() < 1e-9
    noisy = camera_frames(mats, ref, noise=1.0)
    back = measure_video.reference(noisy, mats)
    assert np.abs(back["landmarks"] - ref["landmarks"]).max() < 2.0 and abs(back["side"] - 100) < 3
    jitter = measure_video.rms(np.diff(measure_video.track_errors(noisy, mats, ref)["landmarks"], axis=0))
    assert 0.8 < jitter / math.sqrt(2) < 1.2  # frame-to-frame change of unit noise: sqrt(2)
    # labels that move with the camera flicker only by resampling; labels that slide 2 px a frame, far more
    src = np.zeros(photo[::-1], np.uint8)
    src[80:260, 190:310] = 1
    src[130:160, 210:290] = 2
    steady = [measure_video.warp_labels(src, m, frame) for m in mats]
    sliding = [np.roll(s, 2 * t, axis=1) for t, s in enumerate(steady)]
    floor = measure_video.flicker(steady, mats)
    assert floor < 0.05 and measure_video.flicker(sliding, mats) > 3 * floor


def test_video_measurement_end_to_end(tiny_weights, tmp_path, capsys):
    """A 12-frame clip of the astronaut under the slow camera, parsed both ways by the real command."""
    args = ["--seconds", "0.48", "--period", "3", "--width", "160", "--height", "120", "--no-context"]
    assert measure_video.main([*args, "--weights", str(tiny_weights), "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 12 and "| smooth | 12/12 |" in capsys.readouterr().out
    raw, smooth = summary["raw"], summary["smooth"]
    assert raw["one_face"] == smooth["one_face"] == 12
    assert smooth["landmark_jitter"] < raw["landmark_jitter"], (raw, smooth)
    assert 0 <= summary["floor_flicker"] < 0.1 and raw["fps_wall"] > 0


def test_real_clip_measures_undo_the_motion_by_optical_flow():
    """--clip: a textured scene panning 2 px a frame; labels painted on the scene move with it (flicker near 0
    after the flow), labels fixed on the screen do not; tracks moving at constant speed do not wobble."""
    rng = np.random.default_rng(3)
    scene = (rng.random((140, 260)) * 255).astype(np.uint8)
    scene = np.repeat(cv2.GaussianBlur(scene, (0, 0), 2)[..., None], 3, axis=2)
    truth = np.zeros(scene.shape[:2], np.uint8)
    truth[40:100, 60:140] = 1
    truth[60:80, 80:120] = 2
    frames = [np.ascontiguousarray(scene[20:120, 2 * t : 2 * t + 160]) for t in range(6)]
    moving = [np.ascontiguousarray(truth[20:120, 2 * t : 2 * t + 160]) for t in range(6)]
    flows = measure_video.flow_maps(frames)
    assert min(ok.mean() for _, ok in flows) > 0.8
    still = measure_video.flow_flicker([moving[0]] * 6, flows)
    assert measure_video.flow_flicker(moving, flows) < 0.01 and still > 0.04  # 2 px of each 80 px block's edges
    steady = [{"faces": [{"box": [10 + t, 10, 60 + t, 60], "landmarks": (LM + 2 * t).tolist()}]} for t in range(6)]
    assert measure_video.track_wobble(steady) == {"landmark_wobble": 0.0, "box_wobble": 0.0}
    shaky = [{"faces": [{"box": [10, 10, 60, 60], "landmarks": (LM + (t % 2)).tolist()}]} for t in range(6)]
    assert measure_video.track_wobble(shaky)["landmark_wobble"] == pytest.approx(2.0)  # +1, -1: steps of 2
