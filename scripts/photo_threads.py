"""Seconds per photo of ``FaceParser`` by the decoding stage's threads and precision (issue 12; docs/performance.md,
"Session 11").

    python scripts/photo_threads.py PHOTO[,PHOTO...] --decode-threads 2 --amp auto [--cap 256|none] [--runs 10]

Times ``FaceParser.from_pretrained(decode_threads=..., amp=...)(photo)`` (defaults otherwise) with
``time.perf_counter``: two warm-up calls, then the median of ``--runs``. ``--cap`` overrides
:data:`fpliif.infer.parser.FACE_GRID_SCALE` (grid side in pixels; ``none``: not capped). Run on an idle machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fpliif import FaceParser
from fpliif.infer import parser as parser_module
from fpliif.infer.images import load_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("photos", help="comma-separated photo files")
    p.add_argument("--decode-threads", default="auto")
    p.add_argument("--amp", default="auto")
    p.add_argument("--cap", default=None, help="face window grid cap in pixels, or none")
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    if args.cap is not None:
        parser_module.FACE_GRID_SCALE = float("inf") if args.cap == "none" else int(args.cap) / 128
    threads = args.decode_threads if args.decode_threads == "auto" else int(args.decode_threads)
    parser = FaceParser.from_pretrained(decode_threads=threads, amp=args.amp)
    seconds = []
    for path in args.photos.split(","):
        image = load_image(path)
        parser(image)
        parser(image)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            parser(image)
            times.append(time.perf_counter() - start)
        seconds.append(round(float(np.median(times)), 3))
    print(f"decode_threads {args.decode_threads} amp {args.amp} cap {args.cap}, {torch.get_num_threads()} threads:")
    print(" ".join(f"{s} s" for s in seconds))


if __name__ == "__main__":
    main()
