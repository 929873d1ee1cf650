"""Labels that reach no face (``FaceParser(drop_detached=True)``, docs/detection.md): F1 of the photo path with
and without them on CelebAMask-HQ val images, and how many pixels they are.

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/measure_detached.py ../shared/data/celebamask-mini \\
        [--images 100] [--bridge 0.01,0.02] [--weights NAME_OR_FILE]

Each of the first N val images (folder layout) is parsed once on the photo path with ``drop_detached=False``;
its labels are then scored as they are ("kept"), and with the detached regions reset to background exactly as
the parser does it (``geometry.detached`` seeded by ``FaceParser.face_seeds`` over the detected boxes:
"dropped"), and for each ``--bridge`` share of the largest box side with regions that close counted as one.
Prints a line per image and a summary (mean F1 and the outer classes per variant).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from photo_path_f1 import load_pair, summary

from fpliif import FaceParser
from fpliif.data.layouts import list_samples
from fpliif.eval.metrics import ConfusionMatrix
from fpliif.infer.geometry import detached
from fpliif.validate import int_arg

OUTER = ("background", "hair", "hat", "neck", "cloth", "ear_r")


def shares(text: str) -> list[float]:
    """Comma-separated bridge shares of the box side, each in [0, 0.5]."""
    out = [float(v) for v in text.split(",") if v.strip()]
    if not all(0 <= v <= 0.5 for v in out):
        raise argparse.ArgumentTypeError(f"expected shares in [0, 0.5], got {text!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", help="CelebAMask-HQ folder (folder layout); its val split is used")
    p.add_argument("--images", type=int_arg(1), default=100, help="first N val images (default 100)")
    p.add_argument("--bridge", type=shares, default=[], help="also score these gap-bridging shares, e.g. 0.01,0.02")
    p.add_argument("--weights", default=None, help="bundled name or weights file (default: the bundled model)")
    args = p.parse_args(argv)
    samples = list_samples(args.data, "folder", "val")[: args.images]
    parser = FaceParser.from_pretrained(args.weights, drop_detached=False)
    variants = ["kept", "dropped", *(f"bridge {b}" for b in args.bridge)]
    cms = {v: ConfusionMatrix(len(parser.classes)) for v in variants}
    dropped, t0 = [], time.time()
    for s in samples:
        img, mask = load_pair(s, None)
        result = parser(img)
        labels, boxes = result.labels, [f.box for f in result.faces]
        seeds = parser.face_seeds(labels, boxes)
        side = max((max(b[2] - b[0], b[3] - b[1]) for b in boxes), default=0.0)
        for v, bridge in zip(variants, [None, 0.0, *args.bridge], strict=True):
            lost = np.zeros(labels.shape, bool) if bridge is None else detached(labels, seeds, round(bridge * side))
            cms[v].update(np.where(lost, 0, labels), mask)
            if v == "dropped":
                dropped.append(float(lost.mean()))
                truth = float((mask[lost] > 0).mean()) if lost.any() else 0.0
                print(
                    f"{s.name}: dropped {lost.mean():.3%} of the pixels, {truth:.0%} of them labelled in the "
                    f"ground truth  {time.time() - t0:.0f}s",
                    flush=True,
                )
    out = {v: summary(cm, parser.classes) for v, cm in cms.items()}
    out.update(
        images=len(samples),
        images_changed=sum(d > 0 for d in dropped),
        dropped_mean=float(np.mean(dropped)),
        dropped_max=float(np.max(dropped)),
    )
    json.dump(out, sys.stdout, indent=1)
    print()
    for v in variants:
        f1 = out[v]["f1"]
        print(f"{v}: mean F1 {out[v]['mean_f1']:.2f}  " + "  ".join(f"{c} {f1[c]}" for c in OUTER if c in f1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
