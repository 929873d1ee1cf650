"""Real turned faces: are the most turned (yawed) faces of celebamask-mini found and parsed? (issue #14)

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/measure_turned_faces.py [DATA] [--top 40] [--parse 8]
        [--size 256] [--weights NAME_OR_FILE]

scripts/measure_detection.py turns the image plane (a flat stand-in for a turned head); here the heads really are
turned. Every image of DATA is ranked by a yaw measured on its mask: the horizontal offset of the nose's centroid
from the middle of the face core (skin, nose, eyes, brows, mouth, lips), over the core's half width (0: frontal;
towards 1: the nose at the core's edge, a profile). For the ``--top`` most turned images: MTCNN recall and false
boxes (the matching rule of measure_detection.py), and the share with landmarks. For the ``--parse`` most turned
and, as the baseline, the ``--parse`` least turned: mean F1 and pixel accuracy against the mask of the photo path
(``FaceParser`` defaults: detect, align, parse, paste back) and of the aligned path (``parse_aligned``), scored as
scripts/photo_path_f1.py (dataset-level sums over each group), at ``--size`` (default 256). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from measure_detection import core_box, score
from photo_path_f1 import load_pair, summary
from PIL import Image

from fpliif.eval.metrics import ConfusionMatrix
from fpliif.infer.detect import MTCNNDetector
from fpliif.labels import CELEBAMASK_HQ
from fpliif.validate import int_arg

NOSE = CELEBAMASK_HQ.index("nose")


def yaw(mask: np.ndarray) -> float | None:
    """Signed nose offset from the face core's middle, in core half widths (None without a nose or core)."""
    core = core_box(mask)
    xs = np.nonzero(mask == NOSE)[1]
    if core is None or not len(xs):
        return None
    middle, half = (core[0] + core[2]) / 2, (core[2] - core[0]) / 2
    return float((xs.mean() - middle) / max(half, 1.0))


def ranked(data: Path) -> list[tuple[float, Path, Path]]:
    """(|yaw|, image, mask) of every image with a nose and a face core, most turned first."""
    rows = []
    for image in sorted((data / "images").glob("*.jpg")):
        mask_path = data / "masks" / f"{image.stem}.png"
        y = yaw(np.asarray(Image.open(mask_path)))
        if y is not None:
            rows.append((abs(y), image, mask_path))
    return sorted(rows, key=lambda r: -r[0])


def detection(rows: list[tuple[float, Path, Path]]) -> dict:
    """MTCNN on each image: recall, false boxes, found faces with landmarks; the images missed."""
    mtcnn = MTCNNDetector()
    found = false = landmarks = 0
    missed = []
    for y, image, mask_path in rows:
        dets = mtcnn(np.asarray(Image.open(image).convert("RGB")))
        hit, extra = score(dets, core_box(np.asarray(Image.open(mask_path))))
        found, false = found + hit, false + extra
        landmarks += hit and any(len(d) > 2 and d[2] is not None for d in dets)
        if not hit:
            missed.append(f"{image.stem} (yaw {y:.2f})")
    return {
        "images": len(rows),
        "recall": round(100 * found / max(len(rows), 1), 1),
        "false_boxes": false,
        "with_landmarks": landmarks,
        "missed": missed,
        "yaw_range": [round(rows[-1][0], 2), round(rows[0][0], 2)],
    }


def parsing(parser, rows: list[tuple[float, Path, Path]], size: int) -> dict:
    """Photo path and aligned path against the masks of ``rows`` (dataset-level sums)."""
    n = len(parser.classes)
    cms = {"aligned": ConfusionMatrix(n), "photo": ConfusionMatrix(n)}
    no_face = []
    for _, image, mask_path in rows:
        sample = argparse.Namespace(image_path=image, mask_path=mask_path)
        img, mask = load_pair(sample, size)
        photo = parser(img)
        if not photo.faces:
            no_face.append(image.stem)
        cms["photo"].update(photo.labels, mask)
        cms["aligned"].update(parser.parse_aligned(img).labels, mask)
    out = {k: summary(cm, parser.classes) for k, cm in cms.items()}
    return {**out, "images": len(rows), "no_face": no_face}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="?", default="../shared/data/celebamask-mini", help="CelebAMask-HQ folder")
    p.add_argument("--top", type=int_arg(1), default=40, help="most turned images to detect in (default 40)")
    p.add_argument("--parse", type=int_arg(0), default=8, help="most / least turned images to parse (default 8)")
    p.add_argument("--size", type=int_arg(32, 4096), default=256, help="parse at SIZE x SIZE (default 256)")
    p.add_argument("--weights", default=None, help="bundled name or weights file (default: the bundled model)")
    args = p.parse_args(argv)
    rows = ranked(Path(args.data))
    out = {"ranked": len(rows), "detection": detection(rows[: args.top])}
    if args.parse:
        from fpliif import FaceParser

        parser = FaceParser.from_pretrained(args.weights)
        out["parse_turned"] = parsing(parser, rows[: args.parse], args.size)
        out["parse_frontal"] = parsing(parser, rows[-args.parse :], args.size)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
