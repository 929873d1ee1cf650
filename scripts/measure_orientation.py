"""Faces turned by quarter turns (docs/detection.md, "Faces turned by quarter turns"): detection with
``FaceParser(any_orientation=...)`` off and on, and the photo path's mean F1 of turned val images.

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/measure_orientation.py [DATA] [--limit 200] [--f1-images 36]
        [--f1-data ROOT ...] [--no-cache] [--json-out FILE]

**Detection.** The first ``--limit`` celebamask-mini images (sorted), each padded by a quarter of its side on every
side (edge pixels; the mask by background) and turned by 0, 90, 180 and 270 degrees counter-clockwise (``np.rot90``:
exact), with their masks. A face is *found* when a box matches it (scripts/measure_detection.py's rule: the box's
centre in the mask's face core, its size 0.4-2.5x the core's), *upright* when that detection's roll (from its eye
landmarks) is within 20 degrees of the true one (the mask's eye line, the crops being eye-aligned, minus 90 degrees per
turn), and every other box is a *false* box. Options: ``off``, the default MTCNN detector; ``on``,
``FaceParser(any_orientation=True).detect`` with the bundled model (one thread); ``score``, the same turns with the
best score deciding between a face's orientations and nothing checked (``AnyOrientation(MTCNNDetector())``). CPU ms per
image: median ``process_time`` of one detection of the unturned image (one thread). MTCNN's detections are the same on
the 4 turns of every turned image (np.rot90 is exact: the same 4 arrays), so they are computed once per image and
reused for the turned ones (``--no-cache``: every call fresh, to check that nothing changes); the timed calls run
uncached.

**Photo path** (``--f1-images N``, 0: skip): the first N val images of ``--f1-data`` (default: the mini set; native
size) parsed with the parser's defaults upright (off and on) and turned by 90 and 180 degrees (off and on), the labels
turned back and scored against the mask as ``scripts/photo_path_f1.py`` does (mean F1 over the 18 classes,
dataset-level).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
from measure_detection import core_box, match, matches
from photo_path_f1 import load_pair, summary
from PIL import Image

from fpliif import FaceParser
from fpliif.eval.metrics import ConfusionMatrix
from fpliif.infer.detect import AnyOrientation, MTCNNDetector, roll_degrees
from fpliif.labels import CELEBAMASK_HQ

TURNS = (0, 1, 2, 3)
MAX_ROLL_ERROR = 20.0


def cached(detector: MTCNNDetector) -> MTCNNDetector:
    """``detector`` with its cascade runs remembered per image (bytes and shape) and arguments (``detector.memo``)."""
    run, detector.memo = detector._detect, {}

    def remembered(image: np.ndarray, *args, **kwargs) -> list:
        key = (hashlib.sha1(image.tobytes()).digest(), image.shape, args, tuple(sorted(kwargs.items())))
        if key not in detector.memo:
            detector.memo[key] = run(image, *args, **kwargs)
        return detector.memo[key]

    detector._detect = remembered
    return detector


def padded(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both padded by a quarter of the image's side on every side (edge pixels / background)."""
    p = img.shape[0] // 4
    return (
        cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE),
        cv2.copyMakeBorder(mask, p, p, p, p, cv2.BORDER_CONSTANT, value=0),
    )


def eye_roll(mask: np.ndarray) -> float:
    """The roll of an eye-aligned crop's mask: the line between the eye masks' centroids, folded into [-90, 90)
    (CelebAMask-HQ's l_eye / r_eye are not always on the same side); 0 without both eyes."""
    r, ll = (np.nonzero(mask == CELEBAMASK_HQ.index(c)) for c in ("r_eye", "l_eye"))
    if not len(r[0]) or not len(ll[0]):
        return 0.0
    roll = np.degrees(np.arctan2(ll[0].mean() - r[0].mean(), ll[1].mean() - r[1].mean()))
    return float((roll + 90) % 180 - 90)


def wrapped(degrees: float) -> float:
    return (degrees + 180) % 360 - 180


def scored(dets: list, core, true_roll: float) -> dict:
    """found / upright (0 or 1) and false boxes of one image's detections (the face: the first matching box)."""
    found, false = match(dets, [core])
    hit = next((d for d in dets if matches(d[0], core)), None)
    upright = hit is not None and abs(wrapped(roll_degrees(hit[2]) - true_roll)) < MAX_ROLL_ERROR
    return {"found": int(found[0]), "upright": int(upright), "false": false}


def timed(det, image: np.ndarray) -> tuple[list, float]:
    t0 = time.process_time()
    out = det(image)
    return out, 1000 * (time.process_time() - t0)


def measure_detection(paths: list[Path], masks: Path, cache: bool) -> dict:
    """Found, upright and false boxes per option and turn, and CPU ms per image of each option."""
    plain = MTCNNDetector()
    off = cached(MTCNNDetector()) if cache else MTCNNDetector()
    on = FaceParser.from_pretrained(threads=1, any_orientation=True, detector=off)
    options = {"off": off, "on": on.detect, "score": AnyOrientation(off)}
    stats = {o: {k: {"found": 0, "upright": 0, "false": 0, "n": 0} for k in TURNS} for o in options}
    ms = {"off": [], "on": []}
    for n, path in enumerate(paths):
        img, mask = padded(
            np.asarray(Image.open(path).convert("RGB")), np.asarray(Image.open(masks / f"{path.stem}.png"))
        )
        base = eye_roll(mask)
        ms["off"].append(timed(plain, img)[1])
        if cache:
            off.memo.clear()  # the timed call runs MTCNN on every turn
        ms["on"].append(timed(on.detect, img)[1])
        for k in TURNS:
            turned, tmask = np.ascontiguousarray(np.rot90(img, k)), np.rot90(mask, k)
            core = core_box(tmask)
            for name, det in options.items():
                s = stats[name][k]
                for key, v in scored(det(turned), core, base - 90 * k).items():
                    s[key] += v
                s["n"] += 1
        if (n + 1) % 20 == 0 or n + 1 == len(paths):
            print(f"{n + 1} images", json.dumps(table(stats, ms)), flush=True)
    return table(stats, ms)


def markdown(det: dict) -> str:
    """The detection results as a table: found / upright / false boxes per option and turn, CPU ms."""
    options = list(dict.fromkeys(k.split()[0] for k in det))
    rows = ["| option | " + " | ".join(f"{90 * k}°: found, upright, false" for k in TURNS) + " | CPU ms |"]
    rows.append("|" + "---|" * (len(TURNS) + 2))
    for o in options:
        cells = [", ".join(str(det[f"{o} {90 * k}"][key]) for key in ("found", "upright", "false")) for k in TURNS]
        rows.append(f"| {o} | " + " | ".join(cells) + f" | {det.get(f'{o} cpu_ms_median', '')} |")
    return "\n".join(rows)


def table(stats: dict, ms: dict) -> dict:
    out = {}
    for o, per in stats.items():
        for k, s in per.items():
            out[f"{o} {90 * k}"] = {**s, "found_pct": round(100 * s["found"] / max(s["n"], 1), 1)}
        if o in ms:
            out[f"{o} cpu_ms_median"] = round(float(np.median(ms[o])), 1) if ms[o] else None
    return out


def measure_f1(roots: list[str], images: int) -> dict:
    """Mean F1 of the photo path on the first val images upright and turned by 90 and 180 degrees, off and on."""
    from fpliif.data.layouts import list_samples

    samples = [s for root in roots for s in list_samples(root, "folder", "val")][:images]
    parsers = {"off": FaceParser.from_pretrained(), "on": FaceParser.from_pretrained(any_orientation=True)}
    n = len(parsers["off"].classes)
    runs = [(o, k) for k in (0, 1, 2) for o in ("off", "on")]
    cms = {run: ConfusionMatrix(n) for run in runs}
    no_face = {f"{o} {90 * k}": 0 for o, k in runs}
    for i, s in enumerate(samples):
        img, mask = load_pair(s, None)
        for o, k in runs:
            result = parsers[o](np.ascontiguousarray(np.rot90(img, k)))
            no_face[f"{o} {90 * k}"] += not result.faces
            cms[o, k].update(np.ascontiguousarray(np.rot90(result.labels, -k)), mask)
        print(f"{i + 1}/{len(samples)} {s.name}", flush=True)
    out = {f"{o} {90 * k}": summary(cm, parsers["off"].classes) for (o, k), cm in cms.items()}
    for key, v in out.items():
        v.pop("f1")
        v["no_face"] = no_face[key]
    return {"images": len(samples), **out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="?", default="../shared/data/celebamask-mini")
    p.add_argument("--limit", type=int, default=200, help="first N images (sorted; 0: skip the detection part)")
    p.add_argument("--f1-images", type=int, default=0, help="photo path: first N val images (0: skip)")
    p.add_argument("--f1-data", action="append", help="val roots for --f1-images (default: DATA)")
    p.add_argument("--no-cache", action="store_true", help="run MTCNN afresh on every turned image")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    cv2.setNumThreads(1)
    out = {}
    if args.limit:
        paths = sorted((Path(args.data) / "images").glob("*.jpg"))[: args.limit]
        out["detection"] = measure_detection(paths, Path(args.data) / "masks", not args.no_cache)
    if args.f1_images:
        out["photo_path"] = measure_f1(args.f1_data or [args.data], args.f1_images)
    print(json.dumps(out, indent=1))
    if "detection" in out:
        print(markdown(out["detection"]))
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
