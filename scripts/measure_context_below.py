"""Labels below the context window, against ground truth (docs/detection.md, "Below the context window").

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/measure_context_below.py [--data DIR] [--images 48]
        [--size 128] [--context 0.75] [--shifts 0.1,0.15] [--drops 0.33,0.5,0.75]

A CelebAMask-HQ crop ends 1.0 face window out, so the strip beyond a real context window (1.5 face windows) has
no ground truth. The proxy zooms in: each of the first N val images (folder split), resized to S x S with its
mask, is a photo whose context window is the centred square of ``--context`` x S (default 0.75: the face at
1.33x its trained size, inside the training scale range 0.75-1.35) and whose face window is 1 / CONTEXT_SCALE of
that. Below the context window's bottom edge the photo continues for (1 - context) / 2 of its side: the *strip*,
scored against the ground truth (columns of the context window). Variants for the strip (and, for shifted
windows, the ring they change):

* ``none``: the parser before the lower context window (nothing beyond the context window: background);
* ``shift_s``: the context window moved down by s of its side (the face higher in it);
* ``below_d``: a second window of the context window's side, moved down by d of it, labels the pixels below
  the context window with background / neck / cloth (``_gated``: only in columns whose context label at the
  bottom edge is neck or cloth; ``_hair``: hair too; ``_hairgated``: hair too, in the columns whose context
  label at the bottom edge is hair: the parser's lower context window with d = CONTEXT_DROP);
* ``rule_L``: cloth continued straight down from the context window's last row, in runs of cloth at least L
  of its side long (``hair``: hair too);
* ``geo_T``: cloth grown from the last row's cloth runs into the connected pixels within CIELAB Delta E T of
  their colours.

Zones: ``strip`` (below), ``ring`` (inside the centred context window, outside the face window), ``face`` (the
face window, its band blended with the context window as the parser does). ``cut``: the share of the context
window's bottom edge where a label ends (not background on its last row, background on the row below).
Prints pixel accuracy and F1 (confusion summed over the images), mean ``cut``, and decoder queries and CPU
seconds per image (1 thread) for each variant.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from fpliif.data.layouts import list_samples
from fpliif.infer.framing import BELOW_CLASSES, CONTEXT_CLASSES, CONTEXT_DROP, CONTEXT_FEATHER, CONTEXT_SCALE
from fpliif.infer.geometry import Window, extract_crop, feather_weights, model_input, softmax
from fpliif.labels import CELEBAMASK_HQ
from fpliif.models.checkpoint import input_size_of, load
from fpliif.models.pretrained import resolve_weights

NAMES = CELEBAMASK_HQ.classes
C = len(NAMES)
OUTER = np.array([n in CONTEXT_CLASSES for n in NAMES])
BELOW = np.array([n in BELOW_CLASSES for n in NAMES])
BELOW_HAIR = BELOW | np.array([n == "hair" for n in NAMES])
CLOTH, NECK, HAIR = NAMES.index("cloth"), NAMES.index("neck"), NAMES.index("hair")
SHOWN = ("background", "hair", "neck", "cloth", "skin")
SHIFTS = (0.1, 0.15)
DROPS = (round(CONTEXT_DROP, 4), 0.5, 0.75)
RUNS = (0.0, 0.1)
LIMITS = (8.0, 12.0, 20.0)


class Model:
    """The bundled model, counting decoder queries and CPU time."""

    def __init__(self) -> None:
        self.net = load(resolve_weights(None)).eval()
        self.n = input_size_of(self.net)
        self.queries = 0
        self.cpu = 0.0

    @torch.no_grad()
    def probs(self, img: np.ndarray, win: Window, rows: np.ndarray, cols: np.ndarray, want: np.ndarray) -> np.ndarray:
        """(S*S, C) probabilities of ``win`` at the pixels ``want`` marks (0 elsewhere)."""
        t = time.process_time()
        x = model_input(extract_crop(img, win, "edge"), (self.n, self.n))
        z = self.net.prepare(self.net.encode(torch.from_numpy(x)[None]))
        coords, _ = win.crop_coords(rows, cols)
        out = np.zeros((coords.shape[0], C), np.float32)
        if want.any():
            out[want] = softmax(self.net.query(z, torch.from_numpy(coords[want])[None])[0].numpy())
        self.queries += int(want.sum())
        self.cpu += time.process_time() - t
        return out


def shifted(win: Window, frac: float) -> Window:
    """``win`` moved down by ``frac`` of its side (upright windows only)."""
    return Window(win.x0, win.y0 + int(round(frac * win.side)), win.side, win.angle)


def outer_argmax(p: np.ndarray) -> np.ndarray:
    return np.where(OUTER, p, -1.0).argmax(1)


def run_rule(last: np.ndarray, min_run: int, classes: tuple[int, ...]) -> np.ndarray:
    """Per column of the context window's last row: the label continued downward (0: none), for runs of
    ``classes`` at least ``min_run`` pixels long."""
    out = np.zeros_like(last)
    start = 0
    for i in range(1, last.size + 1):
        if i == last.size or last[i] != last[start]:
            if last[start] in classes and i - start >= max(1, min_run):
                out[start:i] = last[start]
            start = i
    return out


def grow(below: np.ndarray, seeds: np.ndarray, colours: np.ndarray, limit: float) -> np.ndarray:
    """(R, W) bool: the pixels of ``below`` (R, W, 3 CIELAB, the rows under the window's last row) within
    ``limit`` (Delta E) of one of ``colours`` (K, 3) and 8-connected to a ``seeds`` (W,) column of the last row."""
    near = np.full(below.shape[:2], np.inf, np.float32)
    for c in colours:
        np.minimum(near, np.linalg.norm(below - c, axis=-1), out=near)
    grid = np.vstack([seeds[None], near < limit]).astype(np.uint8)
    _, comp = cv2.connectedComponents(grid, connectivity=8)
    keep = np.unique(comp[0][seeds])
    return np.isin(comp[1:], keep[keep > 0])


class Scores:
    def __init__(self) -> None:
        self.conf: dict[str, np.ndarray] = {}
        self.cuts: dict[str, list[float]] = {}
        self.cost: dict[str, list[float]] = {}

    def add(self, name: str, gt: np.ndarray, pred: np.ndarray) -> None:
        m = self.conf.setdefault(name, np.zeros((C, C), np.int64))
        np.add.at(m, (gt, pred), 1)

    def report(self) -> dict:
        out = {}
        for name, m in sorted(self.conf.items()):
            tp = np.diag(m).astype(float)
            f1 = 2 * tp / np.maximum(2 * tp + (m.sum(0) - tp) + (m.sum(1) - tp), 1)
            row = {"acc": round(float(tp.sum() / m.sum()), 4)}
            row.update({n: round(float(f1[NAMES.index(n)]), 3) for n in SHOWN})
            out[name] = row
        for name, v in self.cuts.items():
            out.setdefault(name, {})["cut"] = round(float(np.mean(v)), 4)
        for name, v in self.cost.items():
            out.setdefault(name, {})["queries_cpu"] = [round(float(x), 3) for x in np.mean(v, axis=0)]
        return out


def one_image(model: Model, img: np.ndarray, gt: np.ndarray, frac: float, sc: Scores) -> None:
    s = img.shape[0]
    side = int(round(frac * s / CONTEXT_SCALE))
    side += (s - side) % 2
    face = Window((s - side) // 2, (s - side) // 2, side)
    ctx = face.scaled(CONTEXT_SCALE)
    rows = cols = np.arange(s)
    g = gt.reshape(-1)
    yy, xx = np.divmod(np.arange(s * s), s)
    bottom = ctx.y0 + ctx.side
    strip = (yy >= bottom) & (xx >= ctx.x0) & (xx < ctx.x0 + ctx.side)
    fc, fin = face.crop_coords(rows, cols)
    ring = ctx.crop_coords(rows, cols)[1] & ~fin
    q0, t0 = model.queries, model.cpu
    pf = model.probs(img, face, rows, cols, fin)
    w = feather_weights(fc, CONTEXT_FEATHER)[:, None]

    def compose(win: Window) -> np.ndarray:
        cin = win.crop_coords(rows, cols)[1]
        pc = model.probs(img, win, rows, cols, cin)
        lab = np.where(cin, outer_argmax(pc), 0)
        lab[fin] = np.where(cin[fin, None], w[fin] * pf[fin] + (1 - w[fin]) * pc[fin], pf[fin]).argmax(1)
        return lab

    def score(name: str, lab: np.ndarray, win: Window, cost: tuple[int, float]) -> None:
        for zone, m in (("strip", strip), ("ring", ring), ("face", fin)):
            sc.add(f"{zone}:{name}", g[m], lab[m])
        b = win.y0 + win.side
        if b < s:
            xs = np.arange(max(win.x0, 0), min(win.x0 + win.side, s))
            last, below = lab.reshape(s, s)[b - 1, xs], lab.reshape(s, s)[b, xs]
            sc.cuts.setdefault(name, []).append(float(((last != 0) & (below == 0)).mean()))
        else:
            sc.cuts.setdefault(name, []).append(0.0)
        sc.cost.setdefault(name, []).append(cost)

    base = compose(ctx)
    base_cost = (model.queries - q0, model.cpu - t0)
    score("none", base, ctx, base_cost)
    for f in SHIFTS:
        q1, t1 = model.queries, model.cpu
        win = shifted(ctx, f)
        lab = compose(win)
        score(f"shift_{f}", lab, win, (model.queries - q1, model.cpu - t1))
    last = base.reshape(s, s)[bottom - 1, ctx.x0 : ctx.x0 + ctx.side]
    cols_strip = xx[strip] - ctx.x0
    for d in DROPS:
        q1, t1 = model.queries, model.cpu
        pb = model.probs(img, shifted(ctx, d), rows, cols, strip)
        cost = (model.queries - q1, model.cpu - t1)
        every = np.ones(ctx.side, bool)
        gated = np.isin(last, (NECK, CLOTH))
        hair_cols = (last == HAIR)[cols_strip, None] & (np.arange(C) == HAIR)
        for tag, gate, allowed in (
            ("", every, BELOW),
            ("_gated", gated, BELOW),
            ("_hair", every, BELOW_HAIR),
            ("_hairgated", every, BELOW | hair_cols),
        ):
            lab = base.copy()
            lab[strip] = np.where(gate[cols_strip], np.where(allowed, pb[strip], -1.0).argmax(1), 0)
            score(f"below_{d}{tag}", lab, ctx, cost)
    for r in RUNS:
        for tag, classes in (("", (CLOTH,)), ("_hair", (CLOTH, HAIR))):
            t1 = time.process_time()
            cont = run_rule(last, int(round(r * ctx.side)), classes)
            lab = base.copy()
            lab[strip] = cont[cols_strip]
            score(f"rule_{r}{tag}", lab, ctx, (0, time.process_time() - t1))
    lab_img = cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[bottom - 1 :, ctx.x0 : ctx.x0 + ctx.side]
    seeds = run_rule(last, int(round(0.05 * ctx.side)), (CLOTH,)) == CLOTH
    for limit in LIMITS:
        t1 = time.process_time()
        lab = base.copy()
        if seeds.any():
            cloth = grow(lab_img[1:], seeds, lab_img[0][seeds][:: max(1, seeds.sum() // 32)], limit)
            lab[strip] = np.where(cloth.reshape(-1), CLOTH, 0)
        score(f"geo_{limit}", lab, ctx, (0, time.process_time() - t1))


def val_images(data: str, n: int, size: int) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
    """The first ``n`` val images of ``data`` (folder split): (sample, RGB image, mask), both resized to size x size."""
    for smp in list_samples(data, "folder", "val")[:n]:
        img = cv2.resize(
            np.asarray(Image.open(smp.image_path).convert("RGB")), (size,) * 2, interpolation=cv2.INTER_AREA
        )
        gt = cv2.resize(np.asarray(Image.open(smp.mask_path)), (size,) * 2, interpolation=cv2.INTER_NEAREST)
        yield smp, img, gt


def main() -> None:
    global SHIFTS, DROPS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/celebamask-mini")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--context", type=float, default=0.75, help="context window side / image side")
    p.add_argument("--shifts", default=",".join(map(str, SHIFTS)), help="comma-separated shifts ('' for none)")
    p.add_argument("--drops", default=",".join(map(str, DROPS)), help="comma-separated drops ('' for none)")
    args = p.parse_args()
    SHIFTS = tuple(float(v) for v in args.shifts.split(",") if v)
    DROPS = tuple(float(v) for v in args.drops.split(",") if v)
    torch.set_num_threads(1)
    model, sc = Model(), Scores()
    for i, (smp, img, gt) in enumerate(val_images(args.data, args.images, args.size)):
        one_image(model, img, gt, args.context, sc)
        print(smp.name, i + 1, f"{model.cpu:.0f}s cpu", flush=True)
    strip_gt = sc.conf["strip:none"].sum(1)
    print("strip GT share:", {NAMES[i]: round(float(v / strip_gt.sum()), 3) for i, v in enumerate(strip_gt) if v})
    for name, row in sc.report().items():
        print(json.dumps({"variant": name, **row}))


if __name__ == "__main__":
    main()
