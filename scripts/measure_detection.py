"""Detection recall of Haar vs MTCNN on celebamask-mini and generated variants, and boxes on non-face images
(docs/detection.md, "Recall on all 850 mini-set images").

    python scripts/measure_detection.py [DATA] [--limit N] [--detectors mtcnn,haar] [--time]

Variants of each image (a 512 x 512 CelebAMask-HQ crop with its mask): ``orig``; ``rot+30`` / ``rot-30``: padded to
724 x 724 (edge pixels) and rotated by that many degrees about the centre; ``yaw+50`` / ``yaw-50``: the image plane
turned by 50 degrees about the face's vertical axis (a perspective warp: one side of the face foreshortened, as a
flat stand-in for a turned head; not a real profile). A face counts as found when a box's centre lies in the
bounding box of the (equally warped) mask's face core and its size is 0.4-2.5x the core's; every other box is a
false box. Non-faces: uniform noise, blurred noise, chessboards and synthetic landscapes (sky, mountains, a lake,
textured ground), 8 of each, generated from fixed seeds. ``--time``: CPU time per detection (``process_time``, one
thread), median per variant; only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fpliif.infer.detect import make_detector
from fpliif.infer.framing import CORE_CLASSES
from fpliif.labels import CELEBAMASK_HQ

CORE_IDS = [CELEBAMASK_HQ.index(c) for c in CORE_CLASSES]


def rotated(img: np.ndarray, mask: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Both padded to the diagonal (edge pixels / background) and rotated counter-clockwise on screen."""
    pad = int(round(img.shape[0] * (np.sqrt(2) - 1) / 2))
    img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    mask = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return (
        cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
        cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0),
    )


def yawed(img: np.ndarray, mask: np.ndarray, degrees: float, focal: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """The image plane turned by ``degrees`` about the vertical line through the face core's centre, seen by a
    pinhole camera of focal length ``focal`` image widths (a homography)."""
    h, w = img.shape[:2]
    ys, xs = np.nonzero(np.isin(mask, CORE_IDS))
    cx = float(xs.mean()) if len(xs) else w / 2
    f, a = focal * w, np.radians(degrees)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = []
    for x, y in src:
        x3, z3 = (x - cx) * np.cos(a), f + (x - cx) * np.sin(a)  # the point on the turned plane
        dst.append([cx + f * x3 / z3, h / 2 + f * (y - h / 2) / z3])
    m = cv2.getPerspectiveTransform(src, np.float32(dst))
    return (
        cv2.warpPerspective(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
        cv2.warpPerspective(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0),
    )


VARIANTS = {
    "orig": lambda i, m: (i, m),
    "rot+30": lambda i, m: rotated(i, m, 30),
    "rot-30": lambda i, m: rotated(i, m, -30),
    "yaw+50": lambda i, m: yawed(i, m, 50),
    "yaw-50": lambda i, m: yawed(i, m, -50),
}


def non_faces(n: int = 8, size: tuple[int, int] = (480, 640)) -> dict[str, list[np.ndarray]]:
    """Generated images without faces: noise, blurred noise, chessboards, synthetic landscapes."""
    h, w = size
    out: dict[str, list[np.ndarray]] = {"noise": [], "blurred noise": [], "chessboard": [], "landscape": []}
    for k in range(n):
        rng = np.random.default_rng(100 + k)
        out["noise"].append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        blur = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2 + 2 * k)
        out["blurred noise"].append(cv2.normalize(blur, None, 0, 255, cv2.NORM_MINMAX))
        sq = 8 + 12 * k
        board = ((np.arange(h)[:, None] // sq + np.arange(w)[None] // sq) % 2 * 255).astype(np.uint8)
        out["chessboard"].append(np.repeat(board[..., None], 3, axis=2))
        out["landscape"].append(landscape(rng, h, w))
    return out


def landscape(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Sky gradient, a sun, two mountain ridges, a lake and textured grass."""
    t = np.linspace(0, 1, h)[:, None, None]
    img = ((1 - t) * np.array([90, 140, 230]) + t * np.array([200, 220, 250])) * np.ones((1, w, 1))
    img = img.astype(np.uint8)
    cv2.circle(img, (int(rng.integers(50, w - 50)), int(rng.integers(30, h // 4))), 25, (255, 240, 180), -1)
    for base, colour in ((0.45, (110, 110, 130)), (0.55, (70, 100, 70))):
        xs = np.linspace(0, w, 12)
        ys = base * h - rng.uniform(0, 0.25 * h, 12)
        pts = np.array([[0, h]] + [[x, y] for x, y in zip(xs, ys, strict=True)] + [[w, h]], np.int32)
        cv2.fillPoly(img, [pts], colour)
    lake = int(0.7 * h)
    img[lake:] = (img[lake:] * 0.4 + np.array([40, 90, 150]) * 0.6).astype(np.uint8)
    grass = int(0.85 * h)
    noise = rng.normal(0, 25, (h - grass, w, 3))
    img[grass:] = np.clip(np.array([60, 120, 40]) + noise, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(img, (3, 3), 0)


def core_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    ys, xs = np.nonzero(np.isin(mask, CORE_IDS))
    return None if not len(xs) else (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def score(dets: list, core: tuple[float, float, float, float]) -> tuple[bool, int]:
    """(found, false boxes): a box matches when its centre is in the core box and its size is 0.4-2.5x."""
    x1, y1, x2, y2 = core
    size = ((x2 - x1) + (y2 - y1)) / 2
    found, false = False, 0
    for d in dets:
        bx1, by1, bx2, by2 = d[0]
        cx, cy, s = (bx1 + bx2) / 2, (by1 + by2) / 2, ((bx2 - bx1) + (by2 - by1)) / 2
        if not found and x1 <= cx <= x2 and y1 <= cy <= y2 and 0.4 <= s / size <= 2.5:
            found = True
        else:
            false += 1
    return found, false


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="?", default="../shared/data/celebamask-mini")
    p.add_argument("--limit", type=int, default=None, help="first N images (sorted)")
    p.add_argument("--detectors", default="mtcnn,haar")
    p.add_argument("--time", action="store_true", help="also report median CPU ms per detection")
    args = p.parse_args()
    cv2.setNumThreads(1)
    detectors = {name: make_detector(name) for name in args.detectors.split(",")}
    paths = sorted((Path(args.data) / "images").glob("*.jpg"))[: args.limit]
    for kind, images in non_faces().items():
        for d, det in detectors.items():
            boxes = [len(det(i)) for i in images]
            print(f"non-face {kind} x{len(images)}: {d} boxes {sum(boxes)} {boxes}", flush=True)
    stats = {d: {v: {"found": 0, "false": 0, "n": 0, "ms": []} for v in VARIANTS} for d in detectors}
    for k, path in enumerate(paths):
        img = np.asarray(Image.open(path).convert("RGB"))
        mask = np.asarray(Image.open(Path(args.data) / "masks" / f"{path.stem}.png"))
        for v, make in VARIANTS.items():
            vi, vm = make(img, mask)
            core = core_box(vm)
            if core is None:
                continue
            for d, det in detectors.items():
                t0 = time.process_time()
                dets = det(vi)
                s = stats[d][v]
                s["ms"].append(1000 * (time.process_time() - t0))
                found, false = score(dets, core)
                s["found"] += found
                s["false"] += false
                s["n"] += 1
        if (k + 1) % 10 == 0 or k + 1 == len(paths):
            print(f"{k + 1} images", summary(stats, args.time), flush=True)


def summary(stats: dict, with_time: bool) -> str:
    out = {}
    for d, per in stats.items():
        for v, s in per.items():
            row = {"recall": round(100 * s["found"] / max(s["n"], 1), 2), "false": s["false"], "n": s["n"]}
            if with_time and s["ms"]:
                row["cpu_ms_median"] = round(float(np.median(s["ms"])), 1)
            out[f"{d} {v}"] = row
    return json.dumps(out)


if __name__ == "__main__":
    main()
