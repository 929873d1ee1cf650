"""Where the photo path spends its time (issue 12): CPU seconds per stage of ``FaceParser(photo)``, one thread.

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/photo_profile.py PHOTO [--decode adaptive] [--runs 2]

Wraps the parser's stages and charges each its own CPU time (``time.process_time``, exclusive of the stages it
calls): image I/O, detection, crop + resize, encoding, the face window's grid decode (adaptive or grid-decoded
dense; 0 where it is decoded at the pixels directly) and its sampling + softmax at the original pixels, the same
for the context window, the band blend of the two, and the paste into the canvas. One warm-up call, then the mean
of ``--runs``. CPU time is what a stage costs; on a loaded machine it is inflated, so compare the shares of one
run, not seconds across runs. Prints a JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from fpliif import FaceParser
from fpliif.infer import parser as parser_module
from fpliif.infer.images import load_image
from fpliif.validate import int_arg


class Stages:
    """Exclusive CPU time per stage name: a stage's time excludes the stages it calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stack: list[list[Any]] = []

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
    stages.wrap(fp, "__call__", lambda *a, **k: "other")
    stages.wrap(parser_module, "load_image", lambda *a, **k: "image I/O")
    stages.wrap(fp, "detect", lambda *a, **k: "detection")
    stages.wrap(parser_module, "extract_crop", lambda *a, **k: "crop + resize")
    stages.wrap(parser_module, "model_input", lambda *a, **k: "crop + resize")
    stages.wrap(fp, "_encode", lambda *a, **k: "encoding")
    stages.wrap(fp, "_source", lambda *a, face=None, **k: "context: grid decode" if face else "face: grid decode")
    stages.wrap(
        fp,
        "_decode_window",
        lambda *a, context_of=None, **k: "context: sample + softmax" if context_of else "face: sample + softmax",
    )
    stages.wrap(fp, "_feather", lambda *a, **k: "band blend")
    stages.wrap(parser_module.Canvas, "paste", lambda *a, **k: "paste")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("photo")
    p.add_argument("--decode", default="adaptive", choices=["adaptive", "dense"])
    p.add_argument("--runs", type=int_arg(1), default=2)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    load_image(args.photo)  # the file is readable before anything is timed
    parser = FaceParser.from_pretrained()
    parser(args.photo, decode=args.decode)  # warm-up (and the detector's first load)
    stages = Stages()
    instrument(stages)
    start = time.process_time()
    for _ in range(args.runs):
        result = parser(args.photo, decode=args.decode)
    total = (time.process_time() - start) / args.runs
    per = {k: v / args.runs for k, v in sorted(stages.seconds.items(), key=lambda kv: -kv[1])}
    out = {
        "photo": args.photo,
        "decode": args.decode,
        "faces": len(result.faces),
        "cpu_s": round(total, 3),
        "stages_s": {k: round(v, 3) for k, v in per.items()},
        "stages_share": {k: round(v / total, 3) for k, v in per.items()},
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
