"""How often the parser labels a cluttered background as part of the person: val images on real backgrounds.

    python scripts/measure_backgrounds.py --backgrounds BG_DIR --data ../shared/data/celebamask-mini
        --data ../shared/data/celebamask-extra [--images 48] [--size 256] [--weights NAME_OR_FILE ...]
        [--photos PHOTO_DIR] [--json OUT]

CelebAMask-HQ's backgrounds are mostly smooth, and on real photos the parser labels curtains, lamps and walls
next to a head as hair (docs/detection.md). Each val image is also pasted onto a crop of a real photo without
faces from ``BG_DIR`` (image ``i`` on background ``i % n``, a seeded random crop scaled to cover the image): the
person's pixels (every class but background) are kept, blended over a Gaussian of ``--feather`` px at the outline,
and the rest is the photo. Both versions are area-resized to the model's input, parsed with
``FaceParser.parse_aligned`` (fp32, default decoding) at ``--size`` and scored against the mask. Reported per
weights, for the original images and the pasted ones: mean F1 (as ``fpliif eval``), and of the ground-truth
background pixels the share labelled as any other class (``bg_as_person``) and as hair (``bg_as_hair``).

The backgrounds used in docs/training.md are scikit-image 0.26.0's own photos without faces (``pip download
scikit-image==0.26.0 --no-deps``, then unzip ``skimage/data/``: brick, chelsea, clock_motion, coffee, coins, grass,
gravel, hubble_deep_field, ihc, moon, motorcycle_left, page, rocket, text). No training step sees them:
``augment.background`` draws generated textures.

``--photos DIR``: also parse every image under DIR with the full photo path (``FaceParser`` defaults, fp32) and
report, per photo and in all, the hair pixels lying higher than 0.35 face-box heights above the top of every
detected box (a lower bound of hair on the background: 0.35 is the 99th percentile of ground-truth hair on mini
images, docs/detection.md), as a share of the photo's hair pixels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
from measure_degraded import spread
from photo_path_f1 import load_pair, summary

from fpliif import FaceParser
from fpliif.eval.metrics import ConfusionMatrix
from fpliif.infer.images import load_image
from fpliif.validate import int_arg

IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
HAIR_ABOVE_BOX = 0.35


def background_crop(bg: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``bg`` with the aspect of (h, w), at least half its shorter side, resized to (h, w)."""
    bh, bw = bg.shape[:2]
    side = min(bh, bw / (w / h))
    frac = rng.uniform(0.5, 1.0)
    ch, cw = max(8, int(side * frac)), max(8, int(side * frac * w / h))
    y0, x0 = rng.integers(0, bh - ch + 1), rng.integers(0, bw - cw + 1)
    return cv2.resize(bg[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_AREA)


def paste(img: np.ndarray, mask: np.ndarray, bg: np.ndarray, feather: float) -> np.ndarray:
    """``img`` with its background pixels (mask 0) replaced by ``bg``, blended over ``feather`` px."""
    alpha = (mask != 0).astype(np.float32)
    if feather > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), feather)
    out = alpha[..., None] * img.astype(np.float32) + (1 - alpha[..., None]) * bg.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def measure_pasted(parser: FaceParser, samples: list, backgrounds: list[np.ndarray], size: int, feather: float) -> dict:
    """'original' and 'pasted' -> summary plus bg_as_person / bg_as_hair (percent of ground-truth background)."""
    n_in, hair = parser.input_size, parser.classes.index("hair")
    cms = {k: ConfusionMatrix(len(parser.classes)) for k in ("original", "pasted")}
    for i, s in enumerate(samples):
        img, mask = load_pair(s, None)
        rng = np.random.default_rng(i)
        bg = background_crop(backgrounds[i % len(backgrounds)], *img.shape[:2], rng)
        truth = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        for key, rgb in (("original", img), ("pasted", paste(img, mask, bg, feather))):
            small = cv2.resize(rgb, (n_in, n_in), interpolation=cv2.INTER_AREA)
            cms[key].update(parser.parse_aligned(small, size=size).labels, truth)
    out = {}
    for key, cm in cms.items():
        bg_row = cm.matrix[0].double().numpy()
        out[key] = {
            **summary(cm, parser.classes),
            "bg_as_person": round(100 * (bg_row.sum() - bg_row[0]) / bg_row.sum(), 2),
            "bg_as_hair": round(100 * bg_row[hair] / bg_row.sum(), 2),
        }
    return out


def hair_above_boxes(parser: FaceParser, photos: list[Path]) -> dict:
    """Per photo and in all: hair pixels above every box by > HAIR_ABOVE_BOX box heights, of all hair pixels."""
    hair = parser.classes.index("hair")
    rows, above_all, hair_all = {}, 0, 0
    for path in photos:
        result = parser(load_image(path))
        if not result.faces:
            continue
        is_hair = result.labels == hair
        ys = np.arange(is_hair.shape[0])[:, None]
        high = np.ones_like(is_hair)
        for f in result.faces:
            x1, y1, x2, y2 = f.box
            high &= ys < y1 - HAIR_ABOVE_BOX * (y2 - y1)
        above, total = int((is_hair & high).sum()), int(is_hair.sum())
        rows[path.name] = round(100 * above / max(total, 1), 1)
        above_all, hair_all = above_all + above, hair_all + total
    return {"per_photo": rows, "all": round(100 * above_all / max(hair_all, 1), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backgrounds", required=True, help="folder of photos without faces")
    p.add_argument("--data", action="append", help="CelebAMask-HQ folder (folder layout), repeatable")
    p.add_argument("--images", type=int_arg(1), default=48, help="val images per root, evenly spaced (default 48)")
    p.add_argument("--size", type=int_arg(32, 2048), default=256, help="output side scored (default 256)")
    p.add_argument("--feather", type=float, default=3.0, help="outline blend, Gaussian sigma in px (default 3)")
    p.add_argument("--weights", action="append", help="bundled name or weights file, repeatable (default: bundled)")
    p.add_argument("--photos", default=None, help="also measure hair above the face boxes on these photos")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    bg_paths = sorted(q for q in Path(args.backgrounds).iterdir() if q.suffix.lower() in IMAGE_TYPES)
    if not bg_paths:
        p.error(f"--backgrounds: no images in {args.backgrounds}")
    backgrounds = [load_image(q) for q in bg_paths]
    photos = sorted(q for q in Path(args.photos).rglob("*") if q.suffix.lower() in IMAGE_TYPES) if args.photos else []
    samples = spread(args.data or ["../shared/data/celebamask-mini"], args.images)
    results = {}
    for weights in args.weights or [None]:
        t0 = time.time()
        parser = FaceParser.from_pretrained(weights, amp="none")
        row = measure_pasted(parser, samples, backgrounds, args.size, args.feather)
        if photos:
            row["photos_hair_above_boxes"] = hair_above_boxes(parser, photos)
        row["images"], row["seconds"] = len(samples), round(time.time() - t0, 1)
        results[weights or "bundled"] = row
        print(weights or "bundled", json.dumps({k: v for k, v in row.items() if k not in ("original", "pasted")}))
    print("| weights | mean F1 original | mean F1 pasted | bg as person, original | pasted | bg as hair, pasted |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        o, q = r["original"], r["pasted"]
        print(
            f"| {name} | {o['mean_f1']:.2f} | {q['mean_f1']:.2f} | {o['bg_as_person']:.2f} % "
            f"| {q['bg_as_person']:.2f} % | {q['bg_as_hair']:.2f} % |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
