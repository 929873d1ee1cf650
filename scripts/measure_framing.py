"""Measure where a face detector's box sits in a CelebAMask-HQ crop: the constants of
:class:`fpliif.infer.framing.Framing` (``HAAR_FRAMING``, ``MTCNN_FRAMING``; the numbers are in that module's docstring).

    python scripts/measure_framing.py --measure ../shared/data/celebamask-mini [--detector haar] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fpliif.infer.detect import make_detector, nose_point, roll_degrees
from fpliif.infer.framing import CORE_CLASSES, nose_offset
from fpliif.labels import CELEBAMASK_HQ


def _iqr(v: np.ndarray) -> str:
    return f"{np.percentile(v, 25):.4f}-{np.percentile(v, 75):.4f}"


def _nose_fit(t: np.ndarray) -> dict:
    """DX against the nose landmark's offset from the box centre (rows ``(offset, DX)``): the least-squares slope
    ``dx_nose``, the median of what it leaves as ``dx``, and the spread of DX before and after."""
    slope = float(np.polyfit(t[:, 0], t[:, 1], 1)[0])
    rest = t[:, 1] - slope * t[:, 0]
    return {
        "dx_nose": slope,
        "dx_with_nose": float(np.median(rest)),
        "dx_nose_corr": float(np.corrcoef(t[:, 0], t[:, 1])[0, 1]),
        "dx_iqr_landmarks": _iqr(t[:, 1]),
        "dx_iqr_after_nose": _iqr(rest),
        "nose_offset_p1_p99": [float(np.percentile(t[:, 0], q)) for q in (1, 99)],
    }


def measure(root: str | Path, limit: int | None = None, detector: Any = "mtcnn") -> dict:
    """Measure the framing constants of a detector (a name for :func:`~fpliif.infer.detect.make_detector` or a
    callable) on a folder with ``images/*.jpg`` (square crops) and ``masks/*.png``."""
    root = Path(root)
    images = sorted((root / "images").glob("*.jpg"))
    if not images:
        raise FileNotFoundError(f"{root}/images: no .jpg files")
    if limit:
        images = images[:limit]
    detector = make_detector(detector) if isinstance(detector, str) else detector
    core_ids = [CELEBAMASK_HQ.index(c) for c in CORE_CLASSES]
    rows, core_rows, rolls, turned = [], [], [], []
    for path in images:
        img = np.asarray(Image.open(path).convert("RGB"))
        side = img.shape[1]
        dets = detector(img)
        best = max(dets, key=lambda d: d[1]) if dets else None
        box = best[0] if best else None
        if best is not None and len(best) > 2 and best[2] is not None:
            rolls.append(roll_degrees(best[2]))
        if box is not None:
            x1, y1, x2, y2 = box
            w = ((x2 - x1) + (y2 - y1)) / 2
            rows.append([side / w, ((x1 + x2) / 2 - side / 2) / w, ((y1 + y2) / 2 - side / 2) / w])
            if len(best) > 2 and best[2] is not None:
                turned.append([nose_offset(box, nose_point(best[2]), rolls[-1]), rows[-1][1]])
        mask_path = root / "masks" / (path.stem + ".png")
        if mask_path.is_file():
            mask = np.asarray(Image.open(mask_path))
            ys, xs = np.nonzero(np.isin(mask, core_ids))
            if len(xs):
                cw = xs.max() + 1 - xs.min()
                ccx, ccy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
                row = [cw / side, (ccx - side / 2) / side, (ccy - side / 2) / side]
                if box is not None:
                    row += [w / cw, ((x1 + x2) / 2 - ccx) / w, ((y1 + y2) / 2 - ccy) / w]
                core_rows.append(row)
    r = np.asarray(rows)
    out = {"images": len(images), "detected": len(rows)}
    if len(r):
        out.update(
            scale=float(np.median(r[:, 0])),
            dx=float(np.median(r[:, 1])),
            dy=float(np.median(r[:, 2])),
            scale_iqr=_iqr(r[:, 0]),
            dx_iqr=_iqr(r[:, 1]),
            dy_iqr=_iqr(r[:, 2]),
            box_over_crop=float(np.median(1 / r[:, 0])),
        )
    if len(turned) > 1:
        out.update(_nose_fit(np.asarray(turned)))
    if rolls:
        out["roll_abs_median"] = float(np.median(np.abs(rolls)))
        out["roll_abs_p95"] = float(np.percentile(np.abs(rolls), 95))
    if core_rows:
        c = [np.asarray([row[i] for row in core_rows if len(row) > i]) for i in range(6)]
        out["masks"] = len(core_rows)
        out["core_width_over_crop"] = float(np.median(c[0]))
        out["core_centre_offset"] = [float(np.median(c[1])), float(np.median(c[2]))]
        if len(c[3]):
            out["box_over_core_width"] = float(np.median(c[3]))
            out["box_minus_core_centre"] = [float(np.median(c[4])), float(np.median(c[5]))]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/measure_framing.py", description=__doc__.split("\n")[0])
    p.add_argument("--measure", metavar="DIR", required=True, help="folder with images/*.jpg and masks/*.png")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (sorted)")
    p.add_argument("--detector", default="mtcnn", choices=["mtcnn", "haar"], help="detector to measure (mtcnn)")
    args = p.parse_args(argv)
    res = measure(args.measure, args.limit, args.detector)
    json.dump(res, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if "scale" in res:
        name = f"{args.detector.upper()}_FRAMING"
        dx = f"dx={res['dx']:.4f}, dy={res['dy']:.4f}"
        if "dx_nose" in res:
            dx = f"dx={res['dx_with_nose']:.4f}, dy={res['dy']:.4f}, dx_nose={res['dx_nose']:.4f}"
        print(f"\n{name} = Framing(scale={res['scale']:.4f}, {dx})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
