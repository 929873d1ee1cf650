"""Before/after overlays of the context window (docs/detection.md): the bundled astronaut and a composed group.

    python scripts/context_overlays.py [--out docs/images]

Writes ``context_astronaut.png`` (left to right: ``context=False``; the context window with a hard switch at the
face window's edge, ``feather=0``; the default, blended over the band) and ``context_group.png`` (the same, top to
bottom); ``context_seam.png``: the astronaut's face window (white outline) and its surroundings, enlarged,
with the hard switch (left) and the blended band (right); and ``context_below_astronaut.png`` /
``context_below_group.png``: without the lower context window (``CONTEXT_DROP`` = 0, the parser before it; left,
or above for the group) and with it (the default), the context windows outlined (white: the context window,
yellow: the lower one). The group photo is composed deterministically from the bundled astronaut alone (no other
face photos ship with the package): three copies of her head and shoulders, one mirrored and shrunk, one rolled by
12 degrees, on a grey canvas. Overlays come from ``ParseResult.overlay``; the bundled model, MTCNN, defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fpliif import FaceParser
from fpliif.infer import framing
from fpliif.infer.cli import example_image
from fpliif.infer.geometry import Window
from fpliif.infer.images import load_image


def group_photo(astronaut: np.ndarray) -> np.ndarray:
    """A 960 x 440 canvas with three astronauts: as is, mirrored at 0.8x, rolled by 12 degrees at 0.9x."""
    person = astronaut[0:380, 60:400]
    canvas = np.full((440, 960, 3), 150, np.uint8)
    canvas[:, :, 2] = 170  # a faint blue-grey backdrop
    placed = [
        (person, (20, 60)),
        (cv2.resize(person[:, ::-1], None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA), (340, 136)),
    ]
    h, w = person.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 12, 0.9)
    rolled = cv2.warpAffine(person, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    placed.append((rolled, (620, 60)))
    for img, (x, y) in placed:
        ph, pw = min(img.shape[0], 440 - y), min(img.shape[1], 960 - x)
        canvas[y : y + ph, x : x + pw] = img[:ph, :pw]
    return canvas


def side_by_side(images: list[Image.Image], vertical: bool = False, gap: int = 6) -> Image.Image:
    w = sum(i.width for i in images) + gap * (len(images) - 1) if not vertical else max(i.width for i in images)
    h = max(i.height for i in images) if not vertical else sum(i.height for i in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (w, h), (255, 255, 255))
    at = 0
    for img in images:
        out.paste(img, (0, at) if vertical else (at, 0))
        at += (img.height if vertical else img.width) + gap
    return out


def save_small(img: Image.Image, path: Path, max_side: int = 900) -> None:
    """PNG with a 256-colour palette, at most ``max_side`` pixels wide or high (docs images stay < 300 kB)."""
    scale = min(1.0, max_side / max(img.size))
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    img.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path}: {img.width}x{img.height}, {path.stat().st_size / 1000:.0f} kB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/images", help="output folder (default docs/images)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parser = FaceParser.from_pretrained()
    astronaut = load_image(example_image())
    for name, photo, vertical in (("astronaut", astronaut, False), ("group", group_photo(astronaut), True)):
        results = [parser(photo, context=False), parser(photo, feather=0.0), parser(photo)]
        changed = [(r.labels != results[2].labels).mean() for r in results[:2]]
        print(name, [len(r.faces) for r in results], [f.context for f in results[2].faces], "changed", changed)
        panels = side_by_side([r.overlay(0.5) for r in results], vertical)
        save_small(panels, out / f"context_{name}.png", max_side=900 if name == "astronaut" else 640)
        if name == "astronaut":
            seam = [seam_view(r, results[2].faces[0]) for r in results[1:]]
            save_small(side_by_side(seam), out / "context_seam.png")
        save_small(side_by_side(below_views(parser, photo), vertical), out / f"context_below_{name}.png")


def below_views(parser: FaceParser, photo: np.ndarray) -> list[Image.Image]:
    """Overlays of ``photo`` without and with the lower context window, both windows of each face outlined."""
    from PIL import ImageDraw

    drop = framing.CONTEXT_DROP
    views = []
    for d in (0.0, drop):
        framing.CONTEXT_DROP = d  # read by framing.lower_window at each parse
        try:
            img = parser(photo).overlay(0.5, legend=False)
        finally:
            framing.CONTEXT_DROP = drop
        draw = ImageDraw.Draw(img)
        for _, ctx in parser.windows(photo):
            draw.polygon([tuple(p) for p in ctx.corners()], outline=(255, 255, 255))
            if d:
                draw.polygon([tuple(p) for p in framing.lower_window(ctx).corners()], outline=(255, 220, 0))
        views.append(img)
    return views


def seam_view(result, face, margin: float = 0.2, zoom: int = 2) -> Image.Image:
    """The overlay around ``face``'s window (``margin`` of its side beyond it), enlarged, the window outlined."""
    from PIL import ImageDraw

    x0, y0, x1, _ = face.crop
    win = Window(x0, y0, x1 - x0, face.angle)
    pad = int(margin * win.side)
    img = result.overlay(0.5, boxes=False, legend=False)
    box = (max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, img.width), min(y0 + win.side + pad, img.height))
    view = img.crop(box).resize(((box[2] - box[0]) * zoom, (box[3] - box[1]) * zoom), Image.NEAREST)
    corners = [((x - box[0]) * zoom, (y - box[1]) * zoom) for x, y in win.corners()]
    ImageDraw.Draw(view).polygon(corners, outline=(255, 255, 255))
    return view


if __name__ == "__main__":
    main()
