"""Where the face sits in a CelebAMask-HQ crop, measured: turns a detector's face box into the crop the
model was trained on.

CelebAMask-HQ images are square crops showing the whole head with hair, some neck and shoulders. The
model only sees that framing during training, so in-the-wild photos are cut the same way around each
detected face. With ``w`` the face box size (mean of its width and height) and ``(cx, cy)`` its centre:

    crop side   = SCALE * w
    crop centre = (cx - DX * w, cy - DY * w)

i.e. DX, DY are the face box centre's offset from the crop centre in face-box units.

Measured with the default :class:`~fpliif.infer.detect.HaarDetector` on all 850 images of
celebamask-mini (real CelebAMask-HQ training crops, 512 x 512)::

    python -m fpliif.infer.framing --measure ../shared/data/celebamask-mini

    detected 828 / 850 (97.4 %); best-scoring box per image; medians (interquartile range):
    haar box:  SCALE = 1.5468 (1.4798-1.6254)   DX = 0.0015 (-0.0068-0.0107)   DY = 0.0802 (0.0695-0.0918)
               i.e. the box is 0.646 of the crop side
    cross-check with the 850 masks (face core = skin, nose, eyes, brows, mouth, lips bounding box):
               core width / crop side 0.541, core centre offset (+0.003, +0.054) crop sides
               (= +0.083 box sides below the crop centre: matches DY);
               haar box / core width 1.195 (0.541 * 1.195 = 0.646: matches SCALE),
               haar centre - core centre (-0.003, -0.004) box sides

So the Haar box covers the face from brows to chin, about two thirds of the crop side, 8 % of its size below
the crop centre; the crop adds about a quarter box width on each side (ears, hair), more above (hair)
and the neck below.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Framing:
    """Face box -> square crop window: side ``scale * w``, centre shifted by ``(-dx * w, -dy * w)``."""

    scale: float
    dx: float
    dy: float

    def window(self, box: tuple[float, float, float, float]) -> tuple[int, int, int]:
        """Integer square crop window ``(x0, y0, side)`` in image pixels (may extend outside the image)."""
        x1, y1, x2, y2 = (float(v) for v in box)
        w = max(1.0, ((x2 - x1) + (y2 - y1)) / 2)
        side = max(8, int(round(self.scale * w)))
        cx = (x1 + x2) / 2 - self.dx * w
        cy = (y1 + y2) / 2 - self.dy * w
        return int(round(cx - side / 2)), int(round(cy - side / 2)), side


# Measured constants (see the module docstring for the command and the numbers).
HAAR_FRAMING = Framing(scale=1.5468, dx=0.0015, dy=0.0802)
DEFAULT_FRAMING = HAAR_FRAMING

# Face-core classes for the mask cross-check (CelebAMask-HQ names).
CORE_CLASSES = ("skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "mouth", "u_lip", "l_lip")


def _iqr(v: np.ndarray) -> str:
    return f"{np.percentile(v, 25):.4f}-{np.percentile(v, 75):.4f}"


def measure(root: str | Path, limit: int | None = None, detector=None) -> dict:
    """Measure the framing constants on a folder with ``images/*.jpg`` (square crops) and ``masks/*.png``."""
    from PIL import Image

    from ..labels import CELEBAMASK_HQ
    from .detect import HaarDetector

    root = Path(root)
    images = sorted((root / "images").glob("*.jpg"))
    if not images:
        raise FileNotFoundError(f"{root}/images: no .jpg files")
    if limit:
        images = images[:limit]
    detector = detector or HaarDetector()
    core_ids = [CELEBAMASK_HQ.index(c) for c in CORE_CLASSES]
    rows, core_rows = [], []
    for path in images:
        img = np.asarray(Image.open(path).convert("RGB"))
        side = img.shape[1]
        dets = detector(img)
        box = max(dets, key=lambda d: d[1])[0] if dets else None
        if box is not None:
            x1, y1, x2, y2 = box
            w = ((x2 - x1) + (y2 - y1)) / 2
            rows.append([side / w, ((x1 + x2) / 2 - side / 2) / w, ((y1 + y2) / 2 - side / 2) / w])
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
    p = argparse.ArgumentParser(prog="python -m fpliif.infer.framing", description=__doc__.split("\n")[0])
    p.add_argument("--measure", metavar="DIR", required=True, help="folder with images/*.jpg and masks/*.png")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images (sorted)")
    args = p.parse_args(argv)
    res = measure(args.measure, args.limit)
    json.dump(res, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if "scale" in res:
        print(f"\nHAAR_FRAMING = Framing(scale={res['scale']:.4f}, dx={res['dx']:.4f}, dy={res['dy']:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
