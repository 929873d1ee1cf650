"""Classes that adaptive decoding loses on real photos (issue 12): each photo parsed densely and adaptively with
each ``min_coarse`` asked for, the same detections; a class the dense labels hold (>= ``--min-pixels``) of which the
adaptive labels keep under a fifth is *lost*. Prints the lost classes per photo and, per setting, the decoder
queries, the classes lost and the share of face pixels (dense labels not background) labelled as dense labels them.

    nice -n 19 python scripts/measure_adaptive_parts.py /work/runs/photos --min-coarse 32,64,default

Photos: every JPEG/PNG under the folder (e.g. scripts/fetch_real_photos.py's). fp32 (``amp="none"``), no context
window and no extension past the windows, so only the face windows' decoding differs (docs/performance.md);
``--whole-photo``: the parser's defaults (context windows, extension), so every window's decoding counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fpliif import FaceParser
from fpliif.infer.images import load_image
from fpliif.validate import int_arg


def setting(text: str) -> dict:
    """``default`` (the library's min_coarse) or a number of pixels."""
    return {} if text == "default" else {"min_coarse": int(text)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("photos", type=Path)
    p.add_argument("--min-coarse", default="32,default", help="comma-separated: pixels, or 'default'")
    p.add_argument("--min-pixels", type=int_arg(1), default=20, help="a class counts when dense has this many")
    p.add_argument("--weights", default=None)
    p.add_argument(
        "--whole-photo",
        action="store_true",
        help="parse as FaceParser does by default (context windows and extension on) instead of face windows only",
    )
    args = p.parse_args(argv)
    photos = sorted(f for f in args.photos.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
    common = {"amp": "none"} if args.whole_photo else {"amp": "none", "context": False, "extend": False}
    dense = FaceParser.from_pretrained(args.weights, decode="dense", **common)
    names = dense.classes
    settings = {s: setting(s) for s in args.min_coarse.split(",")}
    parsers = {s: FaceParser.from_pretrained(args.weights, adaptive=o, **common) for s, o in settings.items()}
    totals = {s: {"points": 0, "lost": 0, "agree": [], "faces": 0} for s in settings}
    for f in photos:
        image = load_image(f)
        boxes = dense.detect(image)
        if not boxes:
            continue
        ref = dense(image, boxes=boxes).labels
        present = [c for c in range(1, len(names)) if (ref == c).sum() >= args.min_pixels]
        for s, parser in parsers.items():
            parser.points_decoded = 0
            labels = parser(image, boxes=boxes).labels
            lost = [names[c] for c in present if (labels == c).sum() < 0.2 * (ref == c).sum()]
            t = totals[s]
            t["points"] += parser.points_decoded
            t["lost"] += len(lost)
            t["faces"] += len(boxes)
            t["agree"].append(float((labels == ref)[ref > 0].mean()))
            if lost:
                print(f"{f.name}: min_coarse {s}: lost {', '.join(lost)}", flush=True)
    summary = {
        s: {
            "photos": len(t["agree"]),
            "faces": t["faces"],
            "points": t["points"],
            "classes_lost": t["lost"],
            "face_pixels_as_dense_mean": round(100 * float(np.mean(t["agree"])), 3),
            "face_pixels_as_dense_min": round(100 * float(np.min(t["agree"])), 3),
        }
        for s, t in totals.items()
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
