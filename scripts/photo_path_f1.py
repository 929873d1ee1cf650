"""Mean F1 of the photo path (detect -> align -> parse -> paste back) against the aligned path (issue #14).

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/photo_path_f1.py [--data ../shared/data/celebamask-mini]
        [--data ../shared/data/celebamask-extra] [--images 12] [--size 512] [--weights NAME_OR_FILE]

For the first N val images (folder layout, folder split) of CelebAMask-HQ folders (their val splits in order),
resized to ``--size`` (image: area, mask: nearest; default: the native 512), parses each image twice with the same
model:

* **aligned**: ``FaceParser.parse_aligned`` (the image is a CelebAMask-HQ crop: the training framing);
* **photo**: ``FaceParser(image)``: MTCNN, the crop window from the measured framing rolled by the eye
  landmarks, decoded at the image's own pixels with the context window (all parser defaults).

Both are scored against the mask with :class:`fpliif.eval.metrics.ConfusionMatrix` (dataset-level sums, mean
F1 over the 18 non-background classes, as ``fpliif eval``). An image where the detector finds no face counts
with all-background labels on the photo path (reported). Prints one line per image and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import cv2
import numpy as np
from PIL import Image

from fpliif import FaceParser
from fpliif.data.layouts import list_samples
from fpliif.eval.metrics import ConfusionMatrix
from fpliif.validate import int_arg


def load_pair(sample, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(image RGB uint8, mask uint8) of a sample, resized to size x size when ``size`` is given."""
    img = np.asarray(Image.open(sample.image_path).convert("RGB"))
    mask = np.asarray(Image.open(sample.mask_path))
    if size is not None and img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    if mask.shape != img.shape[:2]:
        mask = cv2.resize(mask, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
    return img, mask


def summary(cm: ConfusionMatrix, classes: tuple[str, ...]) -> dict:
    """Mean F1 (background excluded), pixel accuracy and per-class F1 (percent) of a confusion matrix;
    ``mean_f1_gt``: the mean F1 over the non-background classes with ground-truth pixels only (a class that is
    only predicted scores 0 in ``mean_f1``: on a few images a handful of stray pixels of an absent class moves
    ``mean_f1`` by points)."""
    r = cm.compute()
    per_class = {c: None if f is None else round(f, 2) for c, f in zip(classes, r["f1"], strict=True)}
    present = [f or 0.0 for f, n in list(zip(r["f1"], cm.matrix.sum(1).tolist(), strict=True))[1:] if n]
    return {
        "mean_f1": round(r["mean_f1"], 2),
        "mean_f1_gt": round(sum(present) / max(len(present), 1), 2),
        "pixel_acc": round(r["pixel_acc"], 2),
        "f1": per_class,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data_help = "CelebAMask-HQ folder (folder layout), repeatable: their val splits in order (default: the mini set)"
    p.add_argument("--data", action="append", help=data_help)
    p.add_argument("--images", type=int_arg(1), default=12, help="first N val images (default 12)")
    p.add_argument("--size", type=int_arg(32, 4096), default=None, help="resize to SIZE x SIZE (default: native)")
    p.add_argument("--weights", default=None, help="bundled name or weights file (default: the bundled model)")
    args = p.parse_args(argv)
    roots = args.data or ["../shared/data/celebamask-mini"]
    samples = [s for root in roots for s in list_samples(root, "folder", "val")][: args.images]
    parser = FaceParser.from_pretrained(args.weights)
    n = len(parser.classes)
    cms = {"aligned": ConfusionMatrix(n), "photo": ConfusionMatrix(n)}
    missed, t0 = [], time.time()
    for s in samples:
        img, mask = load_pair(s, args.size)
        aligned = parser.parse_aligned(img).labels
        photo = parser(img)
        if not photo.faces:
            missed.append(s.name)
        cms["aligned"].update(aligned, mask)
        cms["photo"].update(photo.labels, mask)
        agree = float((aligned == photo.labels).mean())
        print(f"{s.name}: {len(photo.faces)} face(s), photo = aligned on {agree:.1%}  {time.time() - t0:.0f}s")
    out = {k: summary(cm, parser.classes) for k, cm in cms.items()}
    out.update(images=len(samples), size=args.size or "native", no_face=missed)
    json.dump(out, sys.stdout, indent=1)
    print()
    a, b = out["aligned"]["mean_f1"], out["photo"]["mean_f1"]
    print(f"mean F1: aligned {a:.2f}, photo {b:.2f} ({len(samples)} images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
