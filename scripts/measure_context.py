"""Measure labels beyond the face window (docs/detection.md, "Context beyond the window").

    python scripts/measure_context.py N F S [DATA [KS]]   # e.g. 48 0.7 128 ../shared/data/celebamask-mini 1.5

Each of the first N val images (folder split) of DATA, resized to S x S with its mask, is a "photo" whose
face window is the centred square of side F * S (a zoomed-in window): its pixels outside that window (the
ring) are scored against the ground truth for: no labels (today), (a) the face latent decoded past [-1, 1]
(LIIF reuses the border latent cells), (b) a context window of K times the standard framing (K * S, so the
face looks as small to the model as in a real photo with CONTEXT_SCALE = K), all classes or only the context
classes. Band: the face window's outer 15 % (|coordinate| > 0.85): face labels, context labels, their average.
Seam: the face window's outer 30 % (|coordinate| > 0.7), where the face window's labels are blended with the
context window's (context classes only, or all classes) over a band of B half-sides
(:func:`fpliif.infer.geometry.feather_weights`; B = 0: the hard switch); ``img_*``: the same over the whole image
(face window + ring). KS: comma-separated context scales (default 1.5,2.0,2.5).
Prints pixel accuracy and F1 per class (confusion summed over the images).
"""

import argparse
import time

import cv2
import numpy as np
import torch
from PIL import Image

from fpliif.data.layouts import list_samples
from fpliif.infer.geometry import Window, extract_crop, feather_weights, model_input
from fpliif.labels import CELEBAMASK_HQ
from fpliif.models.checkpoint import input_size_of, load
from fpliif.models.pretrained import resolve_weights

torch.set_num_threads(1)
_args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
_args.add_argument("N", type=int, help="first N val images")
_args.add_argument("F", type=float, help="face window side as a fraction of the image")
_args.add_argument("S", type=int, help="image side after resizing")
_args.add_argument("DATA", nargs="?", default="../shared/data/celebamask-mini", help="folder-layout dataset")
_args.add_argument("KS", nargs="?", default="1.5,2.0,2.5", help="comma-separated context scales")
ARGS = _args.parse_args()
N, F, S = ARGS.N, ARGS.F, ARGS.S
KS = [float(k) for k in ARGS.KS.split(",")]
BANDS = [0.0, 0.1, 0.15, 0.2, 0.3]
model = load(resolve_weights(None)).eval()

NIN = input_size_of(model)
names = CELEBAMASK_HQ.classes
C = len(names)
OUTER = [names.index(n) for n in ("background", "hair", "hat", "neck", "neck_l", "cloth", "ear_r", "l_ear", "r_ear")]
DATA = ARGS.DATA
samples = list_samples(DATA, "folder", "val")[:N]


def win_scaled(w, k):
    side = w.side + 2 * int(round((k - 1) * w.side / 2))
    d = (side - w.side) // 2
    return Window(w.x0 - d, w.y0 - d, side, w.angle)


@torch.no_grad()
def enc(img, win):
    x = model_input(extract_crop(img, win, "edge"), (NIN, NIN))
    return model.prepare(model.encode(torch.from_numpy(x)[None]))


@torch.no_grad()
def dec(grid, coords):
    return model.query(grid, torch.from_numpy(coords)[None])[0].numpy()


conf = {}  # variant -> confusion over ring (C x C) ; band variants too


def add(name, gt, pred):
    m = conf.setdefault(name, np.zeros((C, C), np.int64))
    np.add.at(m, (gt, pred), 1)


def f1s(m):
    tp = np.diag(m).astype(float)
    fp, fn = m.sum(0) - tp, m.sum(1) - tp
    return np.where(tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan), m.sum(1)


def report():
    out = {}
    for name, m in conf.items():
        f1, sup = f1s(m)
        present = [i for i in range(C) if sup[i] > 0.001 * sup.sum()]
        out[name] = dict(
            acc=float(np.trace(m) / m.sum()),
            mF1_present=float(np.nanmean(f1[present])),
            **{names[i]: round(float(f1[i]), 4) for i in (0, 13, 17, 18, 1)},
        )
        print(
            f"{name:16s} acc {out[name]['acc']:.4f} mF1 {out[name]['mF1_present']:.4f} "
            + " ".join(f"{names[i]} {f1[i]:.3f}" for i in (0, 1, 13, 17, 18))
        )
    sup = conf["none"].sum(1)
    print("ring GT share:", {names[i]: round(float(sup[i] / sup.sum()), 3) for i in range(C) if sup[i]})
    return out


def seam_scores(kr, g, cin, inside, pin, pc_all, pc_outer):
    """Feathered blends of the face window's probabilities with the context's, over the seam and the image."""
    seam = inside & (np.abs(cin).max(axis=1) > 0.7)
    for b in BANDS:
        w = feather_weights(cin, b)[:, None]
        for tag, pc in (("", pc_outer), ("all", pc_all)) if b else (("", pc_outer),):
            pred = np.where(inside, (w * pin + (1 - w) * pc).argmax(1), pc_outer.argmax(1))
            add(f"seam{tag}_f{b}_{kr}", g[seam], pred[seam])
            add(f"img{tag}_f{b}_{kr}", g, pred)


t0 = time.time()
for s in samples:
    img = np.asarray(Image.open(s.image_path).convert("RGB"))
    gt = np.asarray(Image.open(s.mask_path))
    img = cv2.resize(img, (S, S), interpolation=cv2.INTER_AREA)
    gt = cv2.resize(gt, (S, S), interpolation=cv2.INTER_NEAREST)
    side = int(round(F * S))
    side += (S - side) % 2
    inner = Window((S - side) // 2, (S - side) // 2, side)
    rows, cols = np.arange(S), np.arange(S)
    cin, inside = inner.crop_coords(rows, cols)
    ring = ~inside
    band = inside & (np.abs(cin).max(axis=1) > 0.85)
    g = gt.reshape(-1)
    zin = enc(img, inner)
    lin = dec(zin, cin)  # includes extrapolation (a) in ring
    add("none", g[ring], np.zeros(ring.sum(), np.int64))
    add("a_extrapolate", g[ring], lin[ring].argmax(1))
    add("band_inner", g[band], lin[band].argmax(1))
    add("inner_all", g[inside], lin[inside].argmax(1))
    pin = torch.softmax(torch.from_numpy(lin), -1).numpy()
    for kr in KS:
        k = kr / F
        cw = win_scaled(inner, k)
        zc = enc(img, cw)
        cc, _ = cw.crop_coords(rows, cols)
        lc = dec(zc, cc)
        add(f"b{kr}_all", g[ring], lc[ring].argmax(1))
        lo = np.full_like(lc, -1e9)
        lo[:, OUTER] = lc[:, OUTER]
        add(f"b{kr}_outer", g[ring], lo[ring].argmax(1))
        add(f"band_ctx{kr}", g[band], lc[band].argmax(1))
        pc = torch.softmax(torch.from_numpy(lc), -1).numpy()
        add(f"band_avg{kr}", g[band], (pin[band] + pc[band]).argmax(1))
        seam_scores(kr, g, cin, inside, pin, pc, torch.softmax(torch.from_numpy(lo), -1).numpy())
    print(s.name, f"{time.time() - t0:.0f}s", flush=True)
    if (samples.index(s) + 1) % 4 == 0 or s is samples[-1]:
        report()
