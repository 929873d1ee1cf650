"""Peak memory of ``fpliif parse`` on the largest photo the default pixel limit admits (issue 16).

    python scripts/parse_peak_memory.py [--dir DIR] [--pixels N] [--runs plain,overlay] [-- PARSE_OPTIONS...]

Writes DIR/limit_photo.jpg: exactly N pixels (default :data:`fpliif.limits.DEFAULT_MAX_PIXELS`, 8000 x 5000 at
40 M), a photo-like background tiled from the bundled astronaut's face-free right-hand part (backdrop and
shuttle, mirrored) with the whole astronaut pasted in once at 2048 x 2048 (one face). Then runs
``fpliif parse DIR/limit_photo.jpg --out DIR/out --overwrite --quiet`` under ``/usr/bin/time -v``, without and
with ``--overlay`` (``--runs``), and prints each run's maximum resident set size, wall time and exit code.
Memory does not depend on the machine's load; the wall time does.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fpliif import limits
from fpliif.infer.cli import example_image

FACE_SIDE = 2048


def limit_photo(path: Path, pixels: int) -> tuple[int, int]:
    """Write a JPEG of exactly ``pixels`` pixels (width:height about 8:5) with one face; returns (w, h)."""
    w = next(w for w in range(int((pixels * 1.6) ** 0.5), 0, -1) if pixels % w == 0)
    h = pixels // w
    astronaut = Image.open(example_image()).convert("RGB")
    tile = np.asarray(astronaut)[:300, 330:]  # backdrop and shuttle: no face
    tile = np.concatenate([tile, tile[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[::-1]], axis=0)
    reps = (-(-h // tile.shape[0]), -(-w // tile.shape[1]), 1)
    canvas = Image.fromarray(np.ascontiguousarray(np.tile(tile, reps)[:h, :w]))
    side = min(FACE_SIDE, w, h)
    canvas.paste(astronaut.resize((side, side), Image.BICUBIC), ((w - side) // 2, (h - side) // 2))
    canvas.save(path, quality=92)
    return w, h


def measure(argv: list[str]) -> dict[str, str]:
    """``argv`` under ``/usr/bin/time -v``: peak RSS (MB), wall time and exit code."""
    proc = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True)
    text = proc.stderr

    def field(name: str) -> str:
        m = re.search(rf"{re.escape(name)}: (.+)", text)
        return m.group(1).strip() if m else "?"

    rss = field("Maximum resident set size (kbytes)")
    return {
        "peak_rss_mb": f"{int(rss) / 1024:.0f}" if rss.isdigit() else "?",
        "wall": field("Elapsed (wall clock) time (h:mm:ss or m:ss)"),
        "exit": str(proc.returncode),
        "stderr_tail": " | ".join(text.split("\tCommand being timed")[0].strip().splitlines()[-2:])[-300:],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="limit_photo", help="folder for the photo and the outputs")
    ap.add_argument("--pixels", type=int, default=limits.DEFAULT_MAX_PIXELS)
    ap.add_argument("--runs", default="plain,overlay", help="comma-separated: plain, overlay")
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    photo = d / "limit_photo.jpg"
    w, h = limit_photo(photo, args.pixels)
    print(f"{photo}: {w}x{h} = {w * h:,} pixels, {photo.stat().st_size / 1e6:.1f} MB", flush=True)
    fpliif = Path(sys.executable).with_name("fpliif")
    for run in args.runs.split(","):
        cmd = [str(fpliif), "parse", str(photo), "--out", str(d / "out"), "--overwrite", "--quiet", *extra]
        cmd += ["--overlay"] if run == "overlay" else []
        result = measure(cmd)
        print(
            f"{run:8s} peak RSS {result['peak_rss_mb']} MB  wall {result['wall']}  exit {result['exit']}  "
            f"$ {' '.join(cmd[1:])}  {result['stderr_tail']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
