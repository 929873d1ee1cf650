"""Before/after overlays of the labels continued past the windows' edge (docs/detection.md, "Past the windows:
GrabCut").

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/extend_overlays.py [PHOTO ...] [--out DIR]

For each photo (default: the bundled astronaut and the composed group photo of scripts/context_overlays.py): the
parser's labels with ``extend=False`` left / above, and the default (labels continued past each face's context
windows, :func:`fpliif.infer.extend.extend_labels`) right / below; the windows outlined (white: the context window,
yellow: the lower one). Prints per photo the pixels each class gained and the CPU seconds of the whole parse.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from context_overlays import group_photo, save_small, side_by_side
from PIL import ImageDraw

from fpliif import FaceParser
from fpliif.infer.cli import example_image
from fpliif.infer.framing import EXTEND_CLASSES, lower_window
from fpliif.infer.geometry import Window
from fpliif.infer.images import load_image


def face_windows(result) -> list[list[Window]]:
    """Per face of a parse: its context window and the lower one (as the parser frames them)."""
    out = []
    for f in result.faces:
        if f.context is not None:
            ctx = Window(f.context[0], f.context[1], f.context[2] - f.context[0], f.angle)
            out.append([ctx, lower_window(ctx)])
    return out


def outlined(img, groups: list[list[Window]]):
    draw = ImageDraw.Draw(img)
    for ctx, low in groups:
        draw.polygon([tuple(p) for p in ctx.corners()], outline=(255, 255, 255))
        draw.polygon([tuple(p) for p in low.corners()], outline=(255, 220, 0))
    return img


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("photos", nargs="*")
    p.add_argument("--out", default="out/extend")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parser = FaceParser.from_pretrained()
    classes = [parser.classes.index(c) for c in EXTEND_CLASSES]
    astronaut = load_image(example_image())
    photos = [(Path(f).stem, load_image(f)) for f in args.photos] or [
        ("astronaut", astronaut),
        ("group", group_photo(astronaut)),
    ]
    for name, photo in photos:
        photo = photo[..., :3]
        result = parser(photo, extend=False)
        t = time.process_time()
        grown = parser(photo)
        cpu = time.process_time() - t
        labels = grown.labels
        gained = {parser.classes[k]: int(((labels == k) & (result.labels != k)).sum()) for k in classes}
        print(name, f"{len(result.faces)} faces", gained, f"{photo.shape[1]}x{photo.shape[0]}", f"{cpu:.2f}s cpu")
        groups = face_windows(result)
        views = [outlined(r.overlay(0.5, legend=False), groups) for r in (result, grown)]
        save_small(side_by_side(views, vertical=photo.shape[1] > 1.3 * photo.shape[0]), out / f"extend_{name}.png")


if __name__ == "__main__":
    main()
