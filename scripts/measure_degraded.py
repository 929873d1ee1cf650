"""Mean F1 of the aligned parse when the face reaches the model small, soft or compressed (real-photo conditions).

    python scripts/measure_degraded.py --data ../shared/data/celebamask-mini --data ../shared/data/celebamask-extra
        [--images 48] [--size 256] [--weights NAME_OR_FILE ...] [--json OUT]

CelebAMask-HQ crops are sharp 512² studio-quality images; in a group photo or a web JPEG the parser gets a face
crop of 40-100 px, often compressed, which it resizes up to the model's input. Each condition below applies
:func:`fpliif.data.transforms.degrade_image` (the training augmentation ``augment.degrade``, with fixed values) to
the val image at the model's input size (area-resized, as the parser resizes a crop), then parses it with
``FaceParser.parse_aligned`` (fp32, the default adaptive decoding) at ``--size`` and scores it against the mask
(nearest-resized) with :class:`fpliif.eval.metrics.ConfusionMatrix` (dataset-level sums, mean F1 over the 18
non-background classes, as ``fpliif eval``). ``side`` is the crop's side as a fraction of the input (0.5 of 128 =
a 64 px crop, a face box of about 40 px). The images: ``--images`` spread evenly over each root's val split.
Every ``--weights`` is measured on the same images in one process.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
from photo_path_f1 import load_pair, summary

from fpliif import FaceParser
from fpliif.data.layouts import list_samples
from fpliif.data.transforms import degrade_image
from fpliif.eval.metrics import ConfusionMatrix
from fpliif.validate import int_arg

CONDITIONS: dict[str, dict[str, float]] = {
    "clean": {},
    "side 0.75 (96 px)": {"side": 0.75},
    "side 0.5 (64 px)": {"side": 0.5},
    "side 0.375 (48 px)": {"side": 0.375},
    "side 0.3 (38 px)": {"side": 0.3},
    "JPEG 75": {"jpeg": 75},
    "JPEG 50": {"jpeg": 50},
    "side 0.5 + JPEG 75": {"side": 0.5, "jpeg": 75},
    "blur 1 px": {"blur": 1.0},
    "noise 0.03": {"noise": 0.03},
}
"""Fixed conditions: name -> :func:`degrade_image` arguments (``side 0.3`` and ``noise 0.03`` lie outside the
ranges of the v12 training augmentation)."""


def spread(roots: list[str], per_root: int) -> list:
    """``per_root`` val samples of each root, evenly spaced over its split."""
    out = []
    for root in roots:
        val = list_samples(root, "folder", "val")
        out += val[:: max(1, len(val) // per_root)][:per_root]
    return out


def measure(parser: FaceParser, samples: list, size: int) -> dict[str, dict]:
    """Condition name -> the summary (mean F1, pixel accuracy, per-class F1) over ``samples``."""
    n_in = parser.input_size
    cms = {name: ConfusionMatrix(len(parser.classes)) for name in CONDITIONS}
    for s in samples:
        img, mask = load_pair(s, None)
        small = cv2.resize(img, (n_in, n_in), interpolation=cv2.INTER_AREA)
        truth = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        for name, kwargs in CONDITIONS.items():
            seen = degrade_image(small, rng=np.random.default_rng(0), **kwargs).transpose(1, 2, 0)
            cms[name].update(parser.parse_aligned(seen, size=size).labels, truth)
    return {name: summary(cm, parser.classes) for name, cm in cms.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", action="append", help="CelebAMask-HQ folder (folder layout), repeatable")
    p.add_argument("--images", type=int_arg(1), default=48, help="val images per root, evenly spaced (default 48)")
    p.add_argument("--size", type=int_arg(32, 2048), default=256, help="output side scored (default 256)")
    p.add_argument("--weights", action="append", help="bundled name or weights file, repeatable (default: bundled)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    samples = spread(args.data or ["../shared/data/celebamask-mini"], args.images)
    results = {}
    for weights in args.weights or [None]:
        t0 = time.time()
        parser = FaceParser.from_pretrained(weights, amp="none")
        rows = measure(parser, samples, args.size)
        degraded = [r["mean_f1"] for name, r in rows.items() if name != "clean"]
        results[weights or "bundled"] = {
            "conditions": rows,
            "degraded_mean_f1": round(sum(degraded) / len(degraded), 2),
            "images": len(samples),
            "seconds": round(time.time() - t0, 1),
        }
    print("| condition | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for name in CONDITIONS:
        print(f"| {name} | " + " | ".join(f"{r['conditions'][name]['mean_f1']:.2f}" for r in results.values()) + " |")
    means = " | ".join(f"**{r['degraded_mean_f1']:.2f}**" for r in results.values())
    print(f"| **mean of the degraded** | {means} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
