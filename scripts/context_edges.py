"""How often labels end in a straight line at the context window's outer edge (issue 14, item 3; docs/detection.md).

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/context_edges.py [--data ../shared/data/celebamask-mini]
        [--images 88] [--group] [--drop D] [PHOTO ...]

The context windows (``CONTEXT_SCALE`` times the face window, and below it the lower context window,
``CONTEXT_DROP`` of its side further down) end somewhere; their labels can only end in a straight line there where
the edge of their union (a rectangle, rolled with the face) lies *inside* the photo (the photo continues beyond
it). ``--drop 0``: without the lower window (the parser before it). Per face:

* ``inside``: the share of that edge (its perimeter pixels, one pixel inside) that lies inside the photo; 0 when
  the windows reach past the photo on all four sides (no edge at all);
* ``cut``: the share of the perimeter where the photo continues and a label ends there (not background just
  inside the window, background just outside it): computed only for faces with ``inside`` > 0, which are parsed
  (all defaults).

The first N val images of a folder-layout CelebAMask-HQ set (only detected: a face whose context window reaches past
every border cannot be cut), the bundled astronaut with ``--group`` also the composed group photo of
``scripts/context_overlays.py``, and any PHOTO files (parsed). Prints a line per face and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fpliif import FaceParser
from fpliif.infer import framing
from fpliif.infer.geometry import Window
from fpliif.infer.images import load_image
from fpliif.validate import int_arg


def perimeter(
    win: Window, width: int, height: int, inset: float, drop: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image pixels (rows, cols) along the edge of ``win`` extended ``drop`` of its side downwards (along its roll),
    ``inset`` pixels inside it (negative: outside), one per pixel of its sides, and whether each lies inside the
    ``width`` x ``height`` photo."""
    n, m = max(1, int(win.side)), max(1, int(round(win.side * (1 + drop))))
    t = (np.arange(n) + 0.5) / n * 2 - 1  # along the top and bottom, crop coordinates
    s = (np.arange(m) + 0.5) / m * 2 * (1 + drop) - 1  # along the sides
    e = 1 - 2 * inset / win.side
    u = np.concatenate([t, t, np.full(m, -e), np.full(m, e)])
    v = np.concatenate([np.full(n, -e), np.full(n, e + 2 * drop), s, s])
    x, y = win.image_points(np.stack([u, v], axis=1)).T
    rows, cols = np.floor(y).astype(int), np.floor(x).astype(int)
    return rows, cols, (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)


def edge_shares(
    win: Window, labels: np.ndarray | None, width: int, height: int, drop: float = 0.0
) -> dict[str, float | None]:
    """``inside`` and ``cut`` of one context window extended ``drop`` of its side down (``cut`` None without labels):
    a perimeter pixel is cut where the label half a pixel inside is not background and the one 1.5 pixels outside
    (in the photo) is."""
    rows, cols, inside = perimeter(win, width, height, 0.5, drop)
    cut = None
    if labels is not None:
        orows, ocols, out = perimeter(win, width, height, -1.5, drop)
        both = inside & out
        cut = float(((labels[rows[both], cols[both]] != 0) & (labels[orows[both], ocols[both]] == 0)).sum() / rows.size)
    return {"inside": float(inside.mean()), "cut": cut}


def measure(parser: FaceParser, name: str, image: np.ndarray, parse: bool) -> list[dict]:
    """One row per face of ``image``: its context window's shares (parsed when asked or when its edge shows)."""
    h, w = image.shape[:2]
    windows = parser.windows(image)
    drop = framing.CONTEXT_DROP
    shows = any(edge_shares(ctx, None, w, h, drop)["inside"] > 0 for _, ctx in windows)
    labels = parser(image).labels if parse or shows else None
    rows = []
    for k, (_, ctx) in enumerate(windows):
        row = {"photo": name, "face": k, "context": [ctx.x0, ctx.y0, ctx.side, round(ctx.angle, 2)]}
        row.update(edge_shares(ctx, labels, w, h, drop))
        if row["cut"] is None and row["inside"] == 0:
            row["cut"] = 0.0
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("photos", nargs="*", help="photo files to parse and measure")
    p.add_argument("--data", default="../shared/data/celebamask-mini", help="CelebAMask-HQ folder (folder layout)")
    p.add_argument("--images", type=int_arg(0), default=88, help="first N val images (default 88: all of mini's)")
    p.add_argument("--group", action="store_true", help="also the astronaut and the composed group photo")
    p.add_argument("--drop", type=float, default=framing.CONTEXT_DROP, help="lower window's drop (0: none)")
    args = p.parse_args(argv)
    framing.CONTEXT_DROP = args.drop  # read by framing.lower_window at each parse
    parser = FaceParser.from_pretrained()
    rows: list[dict] = []
    if args.images:
        from fpliif.data.layouts import list_samples

        for s in list_samples(args.data, "folder", "val")[: args.images]:
            rows += measure(parser, s.name, load_image(s.image_path), parse=False)
    extra = [(Path(f).name, load_image(f)) for f in args.photos]
    if args.group:
        sys.path.insert(0, str(Path(__file__).parent))
        from context_overlays import group_photo

        from fpliif.infer.cli import example_image

        astronaut = load_image(example_image())
        extra += [("astronaut", astronaut), ("group", group_photo(astronaut))]
    for name, image in extra:
        rows += measure(parser, name, image, parse=True)
    edged = [r for r in rows if r["inside"] > 0]
    summary = {
        "faces": len(rows),
        "context_window_inside_the_photo_somewhere": len(edged),
        "faces_with_a_cut_label": sum(r["cut"] > 0 for r in rows),
        "mean_cut_share_where_inside": round(float(np.mean([r["cut"] for r in edged])), 4) if edged else None,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
