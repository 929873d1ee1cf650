"""Detection recall of Haar vs MTCNN on celebamask-mini and generated variants, and boxes on non-face images
(docs/detection.md, "Recall on all 850 mini-set images"); with ``--photos``, on real photos and their variants
(docs/detection.md, "Real photos from PyPI packages").

    python scripts/measure_detection.py [DATA] [--limit N] [--detectors mtcnn,haar] [--time]
    python scripts/measure_detection.py --photos DIR [--detectors mtcnn,haar,haar+profile] [--variants ...]
        [--json-out FILE]

Variants of each image (a 512 x 512 CelebAMask-HQ crop with its mask): ``orig``; ``rot+30`` / ``rot-30``: padded to
724 x 724 (edge pixels) and rotated by that many degrees about the centre; ``yaw+50`` / ``yaw-50``: the image plane
turned by 50 degrees about the face's vertical axis (a perspective warp: one side of the face foreshortened, as a
flat stand-in for a turned head; not a real profile). A face counts as found when a box's centre lies in the
bounding box of the (equally warped) mask's face core and its size is 0.4-2.5x the core's; every other box is a
false box. Non-faces: uniform noise, blurred noise, chessboards and synthetic landscapes (sky, mountains, a lake,
textured ground), 8 of each, generated from fixed seeds. ``--time``: CPU time per detection (``process_time``, one
thread), median per variant; only meaningful on an otherwise idle machine.

``--photos DIR``: the photos of ``DIR/MANIFEST.json`` (scripts/fetch_real_photos.py) with their hand-checked face
boxes, in the variants ``orig``, ``mirror``, ``rot+30`` / ``rot-30`` (canvas grown to the photo's diagonal) and
``yaw+50`` / ``yaw-50`` (about the vertical line through the faces' mean x); each box is carried through the warp as
the ellipse inscribed in it (its warped bounding box is the face's box there). Same matching rule, one detection per
face; a detection on an ``optional`` face counts neither way. Detector ``haar+profile``: Haar with the profile
cascade (``--profile-faces``); ``mtcnn+second``: MTCNN with second chances checked by the parser (``SecondChance``);
``mtcnn+orient``: MTCNN on the photo and its quarter turns (``FaceParser(any_orientation=True)``);
``mtcnn+second+orient``: both. ``--variants`` picks the variants, also ``turn90`` / ``turn180`` / ``turn270``
(``np.rot90``: turned counter-clockwise by that many degrees, exactly).
Prints per-photo and per-variant tables and the CPU ms per detection (median over the variants).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fpliif.infer.detect import make_detector
from fpliif.infer.framing import CORE_CLASSES
from fpliif.labels import CELEBAMASK_HQ

CORE_IDS = [CELEBAMASK_HQ.index(c) for c in CORE_CLASSES]
Box = tuple[float, float, float, float]


def rotated(img: np.ndarray, mask: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Both padded to a square of the diagonal's side (edge pixels / background) and rotated counter-clockwise on
    screen."""
    diag = float(np.hypot(*img.shape[:2]))
    py, px = (int(round((diag - n) / 2)) for n in img.shape[:2])
    img = cv2.copyMakeBorder(img, py, py, px, px, cv2.BORDER_REPLICATE)
    mask = cv2.copyMakeBorder(mask, py, py, px, px, cv2.BORDER_CONSTANT, value=0)
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return (
        cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
        cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0),
    )


def yawed(
    img: np.ndarray, mask: np.ndarray, degrees: float, focal: float = 1.2, ids: Sequence[int] = CORE_IDS
) -> tuple[np.ndarray, np.ndarray]:
    """The image plane turned by ``degrees`` about the vertical line through the centre of the mask's ``ids`` (the
    face core), seen by a pinhole camera of focal length ``focal`` image widths (a homography)."""
    h, w = img.shape[:2]
    ys, xs = np.nonzero(np.isin(mask, ids))
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


VARIANTS = ("orig", "rot+30", "rot-30", "yaw+50", "yaw-50")
PHOTO_VARIANTS = ("orig", "mirror", "rot+30", "rot-30", "yaw+50", "yaw-50")


def variant(
    name: str, img: np.ndarray, mask: np.ndarray, ids: Sequence[int] = CORE_IDS
) -> tuple[np.ndarray, np.ndarray]:
    """The image and its mask in variant ``name``: orig, mirror, rot<degrees> or yaw<degrees> (about ``ids``)."""
    if name == "orig":
        return img, mask
    if name == "mirror":
        return np.ascontiguousarray(img[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])
    try:
        kind, degrees = name[:3], float(name[3:])
    except ValueError:
        kind = ""
    if kind == "rot":
        return rotated(img, mask, degrees)
    if kind == "yaw":
        return yawed(img, mask, degrees, ids=ids)
    if name.startswith("turn") and name[4:] in ("90", "180", "270"):
        k = int(name[4:]) // 90
        return np.ascontiguousarray(np.rot90(img, k)), np.ascontiguousarray(np.rot90(mask, k))
    raise ValueError(f"variant: expected orig, mirror, rot<degrees>, yaw<degrees> or turn90/180/270, got {name!r}")


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


def core_box(mask: np.ndarray, ids: Sequence[int] = CORE_IDS) -> Box | None:
    ys, xs = np.nonzero(np.isin(mask, ids))
    return None if not len(xs) else (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def matches(box: Sequence[float], core: Box) -> bool:
    """A detection box matches a face when its centre is in the core box and its size is 0.4-2.5x the core's."""
    x1, y1, x2, y2 = core
    bx1, by1, bx2, by2 = box
    cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
    ratio = ((bx2 - bx1) + (by2 - by1)) / ((x2 - x1) + (y2 - y1))
    return x1 <= cx <= x2 and y1 <= cy <= y2 and 0.4 <= ratio <= 2.5


def match(dets: list, cores: Sequence[Box], optional: Sequence[Box] = ()) -> tuple[list[bool], int]:
    """(found per face, false boxes): each detection takes the first face not yet found that it matches; one that
    matches none, and a second one on a face, is a false box, except on an ``optional`` face (counted neither way)."""
    found = [False] * len(cores)
    false = 0
    for d in dets:
        k = next((k for k, c in enumerate(cores) if not found[k] and matches(d[0], c)), None)
        if k is not None:
            found[k] = True
        elif not any(matches(d[0], c) for c in optional):
            false += 1
    return found, false


def score(dets: list, core: Box) -> tuple[bool, int]:
    """(found, false boxes) for an image with one face."""
    found, false = match(dets, [core])
    return found[0], false


def make(spec: str):
    """A detector by name, ``haar+profile`` (Haar with the profile cascade) or ``mtcnn+second`` (MTCNN with second
    chances checked by the bundled parser on one thread: ``FaceParser(second_chance=True).detect``), ``mtcnn+orient``
    (also faces turned by quarter turns: ``FaceParser(any_orientation=True).detect``) or ``mtcnn+second+orient``."""
    if spec == "haar+profile":
        return make_detector("haar", profile=True)
    options = {"mtcnn+second": ("second_chance",), "mtcnn+orient": ("any_orientation",)}
    options["mtcnn+second+orient"] = ("second_chance", "any_orientation")
    if spec in options:
        from fpliif import FaceParser

        return FaceParser.from_pretrained(threads=1, **dict.fromkeys(options[spec], True)).detect
    return make_detector(spec)


def timed(det, image: np.ndarray) -> tuple[list, float]:
    """The detections and the CPU ms they took."""
    t0 = time.process_time()
    dets = det(image)
    return dets, 1000 * (time.process_time() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="?", default="../shared/data/celebamask-mini")
    p.add_argument("--limit", type=int, default=None, help="first N images (sorted)")
    p.add_argument("--detectors", default=None, help="default mtcnn,haar; with --photos mtcnn,haar,haar+profile")
    p.add_argument("--time", action="store_true", help="also report median CPU ms per detection")
    p.add_argument("--photos", type=Path, help="a folder made by scripts/fetch_real_photos.py")
    p.add_argument("--json-out", type=Path, help="with --photos: every result as JSON")
    p.add_argument("--variants", help=f"with --photos: comma-separated (default: {','.join(PHOTO_VARIANTS)})")
    args = p.parse_args()
    cv2.setNumThreads(1)
    names = args.detectors or ("mtcnn,haar,haar+profile" if args.photos else "mtcnn,haar")
    detectors = {name: make(name) for name in names.split(",")}
    if args.photos:
        variants = tuple(args.variants.split(",")) if args.variants else PHOTO_VARIANTS
        records = measure_photos(args.photos, detectors, variants)
        print(photo_tables(records, variants))
        if args.json_out:
            args.json_out.write_text(json.dumps(records, indent=0) + "\n")
        return
    paths = sorted((Path(args.data) / "images").glob("*.jpg"))[: args.limit]
    for kind, images in non_faces().items():
        for d, det in detectors.items():
            boxes = [len(det(i)) for i in images]
            print(f"non-face {kind} x{len(images)}: {d} boxes {sum(boxes)} {boxes}", flush=True)
    stats = {d: {v: {"found": 0, "false": 0, "n": 0, "ms": []} for v in VARIANTS} for d in detectors}
    for k, path in enumerate(paths):
        img = np.asarray(Image.open(path).convert("RGB"))
        mask = np.asarray(Image.open(Path(args.data) / "masks" / f"{path.stem}.png"))
        for v in VARIANTS:
            vi, vm = variant(v, img, mask)
            core = core_box(vm)
            if core is None:
                continue
            for d, det in detectors.items():
                dets, ms = timed(det, vi)
                s = stats[d][v]
                s["ms"].append(ms)
                found, false = score(dets, core)
                s["found"] += found
                s["false"] += false
                s["n"] += 1
        if (k + 1) % 10 == 0 or k + 1 == len(paths):
            print(f"{k + 1} images", summary(stats, args.time), flush=True)


OPTIONAL_ID = 128  # label of the first optional face in face_mask


def face_mask(shape: tuple[int, ...], faces: Sequence[Box], optional: Sequence[Box] = ()) -> np.ndarray:
    """uint8 label map: face k as k + 1, optional face j as OPTIONAL_ID + j, each the ellipse inscribed in its box."""
    mask = np.zeros(shape[:2], np.uint8)
    labels = [k + 1 for k in range(len(faces))] + [OPTIONAL_ID + j for j in range(len(optional))]
    for value, (x1, y1, x2, y2) in zip(labels, [*faces, *optional], strict=True):
        centre, axes = (round((x1 + x2) / 2), round((y1 + y2) / 2)), (round((x2 - x1) / 2), round((y2 - y1) / 2))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, value, -1)
    return mask


def measure_photos(folder: Path, detectors: dict, variants: Sequence[str] = PHOTO_VARIANTS) -> list[dict]:
    """One record per photo, variant and detector: faces found, faces, false boxes, CPU ms."""
    from fpliif.infer.images import load_image

    manifest = folder / "MANIFEST.json"
    if not manifest.is_file():
        raise SystemExit(f"--photos {folder}: no MANIFEST.json (make it with scripts/fetch_real_photos.py)")
    records = []
    for entry in json.loads(manifest.read_text()):
        if entry.get("kind", "image") != "image":
            continue  # a video (scripts/measure_video.py --clip)
        img = load_image(folder / entry["file"])
        faces, optional = entry["faces"], entry["optional"]
        mask = face_mask(img.shape, faces, optional)
        ids = list(range(1, len(faces) + 1))
        for v in variants:
            vi, vm = variant(v, img, mask, ids=ids)
            cores = [core_box(vm, [k]) for k in ids]
            opt = [core_box(vm, [OPTIONAL_ID + j]) for j in range(len(optional))]
            for d, det in detectors.items():
                dets, ms = timed(det, vi)
                found, false = match(dets, cores, [c for c in opt if c is not None])
                rec = {"photo": entry["file"], "variant": v, "detector": d, "found": sum(found), "faces": len(cores)}
                records.append({**rec, "false": false, "cpu_ms": round(ms, 1)})
        print(entry["file"], [(r["detector"], r["found"], r["false"]) for r in records if r["variant"] == "orig"][-3:])
    return records


def photo_tables(records: list[dict], variants: Sequence[str] = PHOTO_VARIANTS) -> str:
    """Markdown: per photo (orig, and summed over the variants), and per detector and variant."""
    dets = list(dict.fromkeys(r["detector"] for r in records))
    photos = list(dict.fromkeys(r["photo"] for r in records))

    def cell(rs: list[dict]) -> str:
        return f"{sum(r['found'] for r in rs)}/{sum(r['faces'] for r in rs)}, {sum(r['false'] for r in rs)}"

    head = "| photo | " + " | ".join(f"{d} orig | {d} all variants" for d in dets) + " |"
    rows = [head, "|" + "---|" * (1 + 2 * len(dets))]
    for ph in photos:
        cells = []
        for d in dets:
            rs = [r for r in records if r["photo"] == ph and r["detector"] == d]
            cells += [cell([r for r in rs if r["variant"] == "orig"]), cell(rs)]
        rows.append(f"| {ph} | " + " | ".join(cells) + " |")
    rows += ["", "| detector | " + " | ".join(variants) + " | CPU ms median |", "|" + "---|" * (len(variants) + 2)]
    for d in dets:
        rs = [r for r in records if r["detector"] == d]
        cells = [cell([r for r in rs if r["variant"] == v]) for v in variants]
        rows.append(f"| {d} | " + " | ".join(cells) + f" | {np.median([r['cpu_ms'] for r in rs]):.0f} |")
    return "found/faces, false boxes\n" + "\n".join(rows)


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
