"""Where the photo path spends its time (issue 12): CPU seconds per stage and window of ``FaceParser(photo)``.

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/photo_profile.py PHOTO [--decode adaptive] [--runs 2]
        [--context-grid-scale S|none] [--amp auto|none|bf16|int8]

Wraps the parser's stages and charges each its own CPU time (``time.process_time``, exclusive of the stages it
calls), per window of the face (``face``, ``context``, ``lower``): its grid's region (``grid roi``), the decoder
queries (``decoder``: the MLP, every call of ``FaceParser._logits``), the adaptive bookkeeping around them
(``adaptive``: upsampling, margins, label-change tests), the sampling + softmax at the photo's pixels
(``pixels``), the paste into the canvas (``paste``); the face window's band blend with the context window
(``face: band blend``, its decoder work charged to it); and image I/O, detection, crop + resize, encoding.
``points`` counts each window's decoder queries (``FaceParser.points_decoded``). ``--context-grid-scale``
overrides :data:`fpliif.infer.parser.CONTEXT_GRID_SCALE` (``none``: context windows not capped). One warm-up
call, then the mean of ``--runs``. CPU time is what a stage costs; on a loaded machine it is inflated, so compare
the shares of one run, not seconds across runs. Prints a JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

from fpliif import FaceParser
from fpliif.infer import parser as parser_module
from fpliif.infer.images import load_image
from fpliif.precision import INFERENCE_AMP_CHOICES
from fpliif.validate import int_arg


class Stages:
    """Exclusive CPU time per stage name (a stage's time excludes the stages it calls) and decoder points per
    window; ``current`` is the innermost running stage's name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.points: dict[str, int] = {}
        self._stack: list[list[Any]] = []
        self.job: Any = None  # the face being parsed (its windows tell the context from the lower window)

    @property
    def window(self) -> str:
        """The window the innermost running stage works for (its name's prefix), "other" outside any."""
        return self._stack[-1][0].split(":")[0] if self._stack else "other"

    def wrap(self, owner: Any, name: str, stage: Callable[..., str]) -> None:
        """Charge ``owner.name``'s calls to ``stage(*args, **kwargs)`` (a stage name)."""
        inner = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append([stage(*args, **kwargs), time.process_time(), 0.0])
            try:
                return inner(*args, **kwargs)
            finally:
                label, start, children = self._stack.pop()
                spent = time.process_time() - start
                self.seconds[label] = self.seconds.get(label, 0.0) + spent - children
                if self._stack:
                    self._stack[-1][2] += spent

        setattr(owner, name, timed)


def instrument(stages: Stages) -> None:
    """Wrap the parser's stages (private methods: this script follows their names)."""
    fp = parser_module.FaceParser

    def source_window(self: Any, z: Any, zm: Any, win: Any, *a: Any, face: Any = None, **k: Any) -> str:
        if face is None:
            return "face: adaptive"
        return "lower: adaptive" if stages.job is not None and win == stages.job.low else "context: adaptive"

    def pixels(*a: Any, context_of: Any = None, below: Any = None, **k: Any) -> str:
        return ("lower" if below is not None else "context" if context_of is not None else "face") + ": pixels"

    def parse_face(self: Any, job: Any, *a: Any, **k: Any) -> str:
        stages.job = job
        return "other"

    def logits(self: Any, z: Any, zm: Any, coords: Any) -> str:
        stages.points[stages.window] = stages.points.get(stages.window, 0) + int(coords.shape[0])
        return f"{stages.window}: decoder"

    stages.wrap(fp, "__call__", lambda *a, **k: "other")
    stages.wrap(parser_module, "as_images", lambda *a, **k: "image I/O")
    stages.wrap(fp, "detect", lambda *a, **k: "detection")
    stages.wrap(parser_module, "extract_crop", lambda *a, **k: "crop + resize")
    stages.wrap(parser_module, "model_input", lambda *a, **k: "crop + resize")
    stages.wrap(fp, "_encode", lambda *a, **k: "encoding")
    stages.wrap(fp, "_parse_face", parse_face)
    stages.wrap(fp, "_source", source_window)
    stages.wrap(fp, "_grid_roi", lambda *a, **k: f"{stages.window}: grid roi")
    stages.wrap(fp, "_decode_window", pixels)
    stages.wrap(fp, "_feather", lambda *a, **k: "face: band blend")
    stages.wrap(fp, "_logits", logits)
    stages.wrap(parser_module.Canvas, "paste", lambda *a, **k: f"{stages.window}: paste")


def scale_arg(value: str) -> float:
    """``--context-grid-scale``: a positive number, or ``none`` (inf: no cap)."""
    scale = math.inf if value.lower() == "none" else float(value)
    if not scale > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'none', got {value!r}")
    return scale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("photo")
    p.add_argument("--decode", default="adaptive", choices=["adaptive", "dense"])
    p.add_argument("--runs", type=int_arg(1), default=2)
    p.add_argument("--context-grid-scale", type=scale_arg, default=parser_module.CONTEXT_GRID_SCALE)
    p.add_argument("--amp", default="auto", choices=INFERENCE_AMP_CHOICES, help="the parser's precision")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    parser_module.CONTEXT_GRID_SCALE = args.context_grid_scale
    load_image(args.photo)  # the file is readable before anything is timed
    parser = FaceParser.from_pretrained(amp=args.amp)
    parser(args.photo, decode=args.decode)  # warm-up (and the detector's first load)
    stages = Stages()
    instrument(stages)
    start = time.process_time()
    for _ in range(args.runs):
        result = parser(args.photo, decode=args.decode)
    total = (time.process_time() - start) / args.runs
    per = {k: v / args.runs for k, v in sorted(stages.seconds.items(), key=lambda kv: -kv[1])}
    windows = {w: sum(v for k, v in per.items() if k.startswith(w + ":")) for w in ("face", "context", "lower")}
    out = {
        "photo": args.photo,
        "decode": args.decode,
        "context_grid_scale": str(args.context_grid_scale),
        "faces": len(result.faces),
        "cpu_s": round(total, 3),
        "windows_s": {k: round(v, 3) for k, v in windows.items()},
        "points": {k: v // args.runs for k, v in stages.points.items()},
        "stages_s": {k: round(v, 3) for k, v in per.items()},
        "stages_share": {k: round(v / total, 3) for k, v in per.items()},
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
