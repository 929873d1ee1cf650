"""A/B of the face window's adaptive grid cap (issue 12): ``FACE_GRID_SCALE`` values against dense decoding on val
photos; labels as dense, mean F1, CPU time, decoder queries (docs/performance.md, "Session 11").

    nice -n 19 env OMP_NUM_THREADS=1 python scripts/face_grid_ab.py K none,384,256

K: val images of each of celebamask-mini and celebamask-extra (folder split, native 512²), plus the bundled
astronaut; caps in pixels of the grid side (``none``: not capped, the window's own pixels up to
``max_decode_size``). Same detections for every variant; one thread; CPU time is ``time.process_time``. Prints
one line per photo and a JSON summary.
"""

import argparse
import json
import time

import numpy as np
import torch
from photo_path_f1 import load_pair, summary

from fpliif import FaceParser
from fpliif.data.layouts import list_samples
from fpliif.eval.metrics import ConfusionMatrix
from fpliif.infer import parser as pm
from fpliif.infer.cli import example_image
from fpliif.infer.images import load_image

torch.set_num_threads(1)
_args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
_args.add_argument("K", type=int, help="val images of each dataset")
_args.add_argument("CAPS", help="comma-separated grid caps in pixels, or none")
ARGS = _args.parse_args()
K = ARGS.K
CAPS = ARGS.CAPS.split(",")
parser = FaceParser.from_pretrained()
n = len(parser.classes)
items = [("astronaut", load_image(str(example_image())), None)]
for root in ["../shared/data/celebamask-mini", "../shared/data/celebamask-extra"]:
    for s in list_samples(root, "folder", "val")[:K]:
        img, mask = load_pair(s, None)
        items.append((s.name, img, mask))
variants = ["dense"] + [f"cap{c}" for c in CAPS]
cms = {v: ConfusionMatrix(n) for v in variants}
cpu = {v: [] for v in variants}
pts = {v: [] for v in variants}
agree = {v: [] for v in variants}
for name, img, mask in items:
    boxes = parser.detect(img)
    labs = {}
    for v in variants:
        mode = "dense" if v == "dense" else "adaptive"
        if v != "dense":
            c = v[3:]
            pm.FACE_GRID_SCALE = float("inf") if c == "none" else int(c) / parser.input_size
        p0 = parser.points_decoded
        t = time.process_time()
        r = parser(img, boxes=boxes, decode=mode)
        cpu[v].append(time.process_time() - t)
        pts[v].append(parser.points_decoded - p0)
        labs[v] = r.labels
        if mask is not None:
            cms[v].update(r.labels, mask)
    for v in variants:
        agree[v].append(float((labs[v] == labs["dense"]).mean()))
    print(
        name,
        [r.faces[0].crop[2] - r.faces[0].crop[0] if r.faces else None],
        {v: round(agree[v][-1] * 100, 3) for v in variants},
        {v: round(cpu[v][-1], 3) for v in variants},
        {v: pts[v][-1] for v in variants},
        flush=True,
    )
out = {}
for v in variants:
    s = summary(cms[v], parser.classes)
    out[v] = dict(
        mean_f1=s["mean_f1"],
        pixel_acc=s["pixel_acc"],
        agree_mean=round(100 * np.mean(agree[v]), 4),
        agree_min=round(100 * np.min(agree[v]), 4),
        cpu_median=round(float(np.median(cpu[v])), 3),
        cpu_mean=round(float(np.mean(cpu[v])), 3),
        points_mean=int(np.mean(pts[v])),
    )
print(json.dumps(out, indent=1))
