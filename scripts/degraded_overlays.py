"""Overlays of the bundled astronaut photo parsed small and compressed, by several weights side by side.

    python scripts/degraded_overlays.py --weights OLD.safetensors --weights NEW.safetensors --out docs/images/x.png
        [--sides 512,160,112] [--jpeg 60]

Each row is the photo resized (area) to a side of ``--sides`` and, below full size, JPEG-encoded at ``--jpeg``
(a small face in a web photo: at 160 px the face box is about 50 px); each column one weights file, parsed with
the parser's defaults (``FaceParser.from_pretrained(weights)``). Small rows are shown enlarged (nearest) to the
full size so the labels can be seen. The photo is NASA's (public domain), bundled as ``fpliif/assets``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from fpliif import FaceParser
from fpliif.infer.images import load_image

PHOTO = Path(__file__).resolve().parents[1] / "src" / "fpliif" / "assets" / "astronaut.jpg"


def shrunk(photo: np.ndarray, side: int, quality: int) -> np.ndarray:
    """The photo at ``side`` px (area), JPEG-encoded at ``quality`` when it was made smaller."""
    if side >= photo.shape[0]:
        return photo
    small = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1] if ok else small


def tile(overlay: np.ndarray, size: int, caption: str) -> np.ndarray:
    """The overlay enlarged (nearest) to ``size``² with a caption bar."""
    big = cv2.resize(overlay, (size, size), interpolation=cv2.INTER_NEAREST)
    bar = np.full((28, size, 3), 255, np.uint8)
    cv2.putText(bar, caption, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, big], 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", action="append", required=True, help="weights file or bundled name, repeatable")
    p.add_argument("--names", default=None, help="comma-separated column names (default: the file stems)")
    p.add_argument("--sides", default="512,160,112", help="photo sides, one row each (default 512,160,112)")
    p.add_argument("--jpeg", type=int, default=60, help="JPEG quality of the smaller rows (default 60)")
    p.add_argument("--size", type=int, default=320, help="tile side in the figure (default 320)")
    p.add_argument("--out", required=True, help="output PNG")
    args = p.parse_args(argv)
    names = args.names.split(",") if args.names else [Path(w).stem for w in args.weights]
    if len(names) != len(args.weights):
        p.error("--names: one name per --weights")
    photo = load_image(PHOTO)
    parsers = [FaceParser.from_pretrained(w) for w in args.weights]
    rows = []
    for side in (int(s) for s in args.sides.split(",")):
        image = shrunk(photo, side, args.jpeg)
        note = "" if side >= photo.shape[0] else f", JPEG {args.jpeg}"
        cells = []
        for name, parser in zip(names, parsers, strict=True):
            result = parser(image)
            cells.append(tile(np.asarray(result.overlay().convert("RGB")), args.size, f"{name}: {side} px{note}"))
        rows.append(np.concatenate(cells, 1))
    figure = np.concatenate(rows, 0)
    cv2.imwrite(args.out, figure[..., ::-1])
    print(f"wrote {args.out} ({figure.shape[1]}x{figure.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
