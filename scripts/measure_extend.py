"""Labels continued past the windows' edge by GrabCut, against ground truth (docs/detection.md, "Past the
windows: GrabCut").

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/measure_extend.py [--data DIR] [--images 48] [--size 128]
        [--window 0.75] [--centre-y 0.5] [--reaches 0.1,0.25] [--inits bg,fg] [--iterations 1,4] [--gates 1,0]
        [--confident 0,0.9] [--gt-seeds]

The proxy of scripts/measure_context_below.py: each of the first N val images (folder split), resized to S x S, is a
photo whose context window is its centred square of ``--window`` S (default 0.75; the face window 1 / CONTEXT_SCALE
of that, blended over its band as the parser does). Outside the context window the labels are *hidden*: the bands
past its bottom (``bottom``, its columns), its sides (``sides``, every row) and its top (``top``); the hidden band is
(1 - window) / (2 window) of the context window's side wide (1/6 at 0.75, 1/2 at 0.5: a *zoomed* proxy, for reaches
past 1/6, with the face at 2x its trained size, outside the training scales). ``d0`` ... ``d3``: the hidden
pixels 0-1/6, 1/6-1/3, 1/3-1/2 and over 1/2 of the context window's side past its edge (Chebyshev distance);
``inside``: the context window itself (the seeds' accuracy). ``--centre-y`` moves the windows' centre down (0.625
with ``--window 0.5``: its bottom edge where the default's is, the hidden sides beside the shoulders, the top band
3/4 of its side). Variants for the hidden pixels:

* ``none``: background (the parser without the lower context window);
* ``parser``: the lower context window's labels below the context window and inside the lower window (the parser
  today: CONTEXT_DROP, background / neck / cloth and hair under the edge's hair), background elsewhere;
* ``gc_{init}_{reach}``: :func:`fpliif.infer.extend.extend_labels` seeded by the parser's labels inside the context
  window (the honest number); ``gtseed_...``: seeded by the ground truth inside it (an upper bound);
* ``parser+gc_...``: the parser's lower window, then the extension past both windows (into the sides).

Prints, per variant, pixel accuracy over the hidden pixels and per band, F1 of background / hair / neck / cloth
over the hidden pixels (confusion summed over the images), ``bleed``: the share of the hidden pixels whose truth
is background that get another label (``bleed_d0`` ...: per distance band), ``new_bg``: the share of the pixels
the extension labelled whose truth is background, and CPU seconds per image of the extension (one thread).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import cv2
import numpy as np
import torch
from measure_context_below import BELOW, HAIR, OUTER, Model, outer_argmax, shifted, val_images

from fpliif.infer.extend import EXTEND_ITERATIONS, EXTEND_REACH, extend_labels
from fpliif.infer.framing import CONTEXT_DROP, CONTEXT_FEATHER, CONTEXT_SCALE, EXTEND_CLASSES
from fpliif.infer.geometry import Window, feather_weights
from fpliif.labels import CELEBAMASK_HQ

NAMES = CELEBAMASK_HQ.classes
C = len(NAMES)
SHOWN = ("background", "hair", "neck", "cloth")
DISTANCES = ("d0", "d1", "d2", "d3")
# The distance bands' outer edges past the context window's edge, in shares of its side.
DISTANCE_EDGES = (1 / 6, 1 / 3, 1 / 2, np.inf)
BANDS = ("hidden", "bottom", "sides", "top", *DISTANCES, "inside")
KS = [NAMES.index(c) for c in EXTEND_CLASSES]


class Tally:
    """Confusion matrices per (variant, band), extension pixels and CPU seconds per variant."""

    def __init__(self) -> None:
        self.conf: dict[tuple[str, str], np.ndarray] = {}
        self.new: dict[str, np.ndarray] = {}
        self.cpu: dict[str, list[float]] = {}

    def add(self, name: str, gt: np.ndarray, lab: np.ndarray, bands: dict[str, np.ndarray], base: np.ndarray) -> None:
        for band, m in bands.items():
            np.add.at(self.conf.setdefault((name, band), np.zeros((C, C), np.int64)), (gt[m], lab[m]), 1)
        added = (lab != base) & (lab > 0)
        self.new.setdefault(name, np.zeros(2, np.int64))[:] += (int(added.sum()), int((added & (gt == 0)).sum()))

    def rows(self) -> list[dict]:
        out = []
        for name in dict.fromkeys(n for n, _ in self.conf):
            m = self.conf[name, "hidden"]
            tp = np.diag(m).astype(float)
            f1 = 2 * tp / np.maximum(2 * tp + (m.sum(0) - tp) + (m.sum(1) - tp), 1)
            row: dict = {"variant": name}
            row.update({b: share(np.trace(self.conf[name, b]), self.conf[name, b].sum()) for b in BANDS})
            row.update({n: round(float(f1[NAMES.index(n)]), 3) for n in SHOWN})
            for band in ("hidden", *DISTANCES):
                bg = self.conf[name, band][0]
                row["bleed" if band == "hidden" else f"bleed_{band}"] = share(bg.sum() - bg[0], bg.sum())
            added, wrong = self.new.get(name, (0, 0))
            row["new_bg"] = round(float(wrong / max(added, 1)), 4)
            if name in self.cpu:
                row["cpu_s"] = round(float(np.mean(self.cpu[name])), 3)
            out.append(row)
        return out


def share(part: float, whole: float) -> float | None:
    """``part / whole`` rounded to 4 places, None where ``whole`` is 0 (an empty band)."""
    return round(float(part / whole), 4) if whole else None


def parsed(model: Model, img: np.ndarray, ctx: Window, face: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S, S) labels inside the context window as the parser composes them (face window blended over its band with
    the context window's; outer classes outside it; 0 outside the context window), and the lower context window's
    labels below it (the parser today), and the top probability of each label (1 outside both)."""
    s = img.shape[0]
    rows = cols = np.arange(s)
    fc, fin = face.crop_coords(rows, cols)
    cin = ctx.crop_coords(rows, cols)[1]
    pf = model.probs(img, face, rows, cols, fin)
    pc = model.probs(img, ctx, rows, cols, cin)
    w = feather_weights(fc, CONTEXT_FEATHER)[:, None]
    lab = np.where(cin, outer_argmax(pc), 0)
    top = np.where(cin, np.where(OUTER, pc, 0).max(1), 1.0)
    blend = w[fin] * pf[fin] + (1 - w[fin]) * pc[fin]
    lab[fin], top[fin] = blend.argmax(1), blend.max(1)
    yy, xx = np.divmod(np.arange(s * s), s)
    low = shifted(ctx, CONTEXT_DROP)
    strip = (yy >= ctx.y0 + ctx.side) & (xx >= ctx.x0) & (xx < ctx.x0 + ctx.side) & (yy < low.y0 + low.side)
    pb = model.probs(img, low, rows, cols, strip)
    last = lab.reshape(s, s)[ctx.y0 + ctx.side - 1, ctx.x0 : ctx.x0 + ctx.side]
    hair_cols = (last == HAIR)[xx[strip] - ctx.x0, None] & (np.arange(C) == HAIR)
    below = lab.copy()
    below[strip] = np.where(BELOW | hair_cols, pb[strip], -1.0).argmax(1)
    top[strip] = np.where(BELOW | hair_cols, pb[strip], 0).max(1)
    return lab.reshape(s, s).astype(np.uint8), below.reshape(s, s).astype(np.uint8), top.reshape(s, s)


def bands_of(s: int, ctx: Window) -> dict[str, np.ndarray]:
    """(S, S) bool masks of the scored bands (the module docstring) around an upright ``ctx``."""
    yy, xx = np.mgrid[:s, :s]
    cols = (xx >= ctx.x0) & (xx < ctx.x0 + ctx.side)
    bottom, top = cols & (yy >= ctx.y0 + ctx.side), cols & (yy < ctx.y0)
    hidden = bottom | top | ~cols
    end = ctx.x0 + ctx.side - 1, ctx.y0 + ctx.side - 1
    past = np.maximum.reduce([ctx.x0 - xx, xx - end[0], ctx.y0 - yy, yy - end[1]]) - 0.5
    edges = np.array([0.0, *DISTANCE_EDGES]) * ctx.side
    dist = {d: hidden & (past > edges[i]) & (past <= edges[i + 1]) for i, d in enumerate(DISTANCES)}
    return {"hidden": hidden, "bottom": bottom, "sides": ~cols, "top": top, **dist, "inside": ~hidden}


def one_image(model: Model, img: np.ndarray, gt: np.ndarray, args, tally: Tally) -> None:
    s = img.shape[0]
    side = int(round(args.context * s / CONTEXT_SCALE))
    side += (s - side) % 2
    face = Window((s - side) // 2, int(round(args.centre_y * s - side / 2)), side)
    ctx = face.scaled(CONTEXT_SCALE)
    low = shifted(ctx, CONTEXT_DROP)
    lab, below, conf = parsed(model, img, ctx, face)
    bands = bands_of(s, ctx)
    seeds = np.where(bands["hidden"], 0, gt).astype(np.uint8)
    tally.add("none", gt, lab, bands, lab)
    tally.add("parser", gt, below, bands, lab)
    for init, reach, its, gate, level in itertools.product(
        args.inits, args.reaches, args.iterations, args.gates, args.confident
    ):
        tag = f"{init}_{reach}_i{its}{'_gated' if gate else ''}{f'_c{level}' if level else ''}"
        for name, start, wins, sure in (
            (f"gc_{tag}", lab, [ctx], conf >= level),
            (f"gtseed_{tag}", seeds, [ctx], None),
            (f"parser+gc_{tag}", below, [ctx, low], conf >= level),
        ):
            if name.startswith("gtseed") and not args.gt_seeds:
                continue
            t = time.process_time()
            out = extend_labels(img, start, wins, KS, reach=reach, iterations=its, init=init, gate=gate, confident=sure)
            tally.cpu.setdefault(name, []).append(time.process_time() - t)
            tally.add(name, gt, out, bands, start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/celebamask-mini")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--window", "--context", dest="context", type=float, default=0.75, help="context side / image side")
    p.add_argument("--centre-y", type=float, default=0.5, help="the windows' centre height / image side")
    p.add_argument("--reaches", default=str(EXTEND_REACH), help="comma-separated reaches (shares of a window's side)")
    p.add_argument("--inits", default="bg", help="comma-separated GrabCut starts past the edge: bg, fg")
    p.add_argument("--iterations", default=str(EXTEND_ITERATIONS), help="comma-separated GrabCut iterations")
    p.add_argument("--gates", default="1", help="comma-separated 1 (only near the class at the edge) / 0 (anywhere)")
    p.add_argument("--confident", default="0", help="comma-separated seed thresholds on the top probability")
    p.add_argument("--gt-seeds", action="store_true", help="also seed from the ground truth (an upper bound)")
    args = p.parse_args()
    args.reaches = [float(v) for v in args.reaches.split(",") if v]
    args.inits = [v for v in args.inits.split(",") if v]
    args.iterations = [int(v) for v in args.iterations.split(",") if v]
    args.gates = [v == "1" for v in args.gates.split(",") if v]
    args.confident = [float(v) for v in args.confident.split(",") if v]
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    model, tally = Model(), Tally()
    for i, (smp, img, gt) in enumerate(val_images(args.data, args.images, args.size)):
        one_image(model, img, gt, args, tally)
        print(smp.name, i + 1, f"{model.cpu:.0f}s model cpu", flush=True)
    for row in tally.rows():
        print(json.dumps(row))


if __name__ == "__main__":
    main()
