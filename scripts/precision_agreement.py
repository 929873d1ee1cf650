"""Accuracy of the inference precisions (bf16, int8) against fp32 dense decoding on validation images.

For each image (``--images`` spread evenly over the split) and output size, the fp32 dense labels are the
reference; each variant ``PRECISION:DECODE`` (precision ``none`` = fp32, ``bf16`` autocast, ``int8``
dynamically quantised decoder MLP, :mod:`fpliif.quantize`; decode ``dense`` or ``adaptive``) is decoded from
the same image. Reports, per size and variant, the share of pixels labelled as fp32 dense labels them (over
all images, and the worst image) and the dataset-level mean F1 against the ground truth, next to fp32
dense's: the issue's bounds are >= 99.5 % identical pixels and |delta mean F1| <= 0.2 (docs/performance.md).

    python scripts/precision_agreement.py --data ../shared/data/celebamask-mini \\
        --data ../shared/data/celebamask-extra --images 48 --sizes 128,256,512 \\
        --variants int8:dense,int8:adaptive --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from fpliif.adaptive import check_decode_mode
from fpliif.bench.inference import _autocast
from fpliif.eval.evaluate import summarize
from fpliif.eval.metrics import ConfusionMatrix
from fpliif.labels import IGNORE_INDEX
from fpliif.models import pixel_centers
from fpliif.models.checkpoint import input_size_of, load
from fpliif.models.pretrained import resolve_weights
from fpliif.precision import resolve_amp
from fpliif.quantize import int8_decoder
from fpliif.validate import parse_int_list

REFERENCE = "none:dense"


def parse_variants(text: str) -> list[tuple[str, str]]:
    """``"int8:dense,bf16:adaptive"`` -> [(precision, decode), ...], checked."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        amp, _, decode = item.partition(":")
        if amp not in ("none", "bf16", "int8") or not decode:
            raise ValueError(f"--variants: expected PRECISION:DECODE with PRECISION none/bf16/int8, got {item!r}")
        out.append((amp, check_decode_mode(decode, "--variants")))
    if not out:
        raise ValueError("--variants: expected at least one PRECISION:DECODE")
    return out


def labels_of(model: Any, image: torch.Tensor, size: int, amp: str, decode: str) -> torch.Tensor:
    """(size, size) labels of one (1, 3, N, N) image at ``amp`` precision (``int8``: quantised decoder MLP)."""
    with int8_decoder(model, amp == "int8"), _autocast(image.device, "bf16" if amp == "bf16" else "none"):
        grid = model.prepare(model.encode(image))
        if decode == "adaptive":
            logits = model.decode_adaptive(grid, size)[0][0].permute(1, 2, 0)
        else:
            coords = pixel_centers(size, size, device=image.device)[None]
            logits = model.decode_prepared(grid, coords)[0].view(size, size, -1)
    return logits.float().argmax(-1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fpliif.data import FaceParsingDataset, build_eval_transform

    sizes = parse_int_list(args.sizes, "--sizes")
    variants = parse_variants(args.variants)
    if any(a == "bf16" for a, _ in variants):
        resolve_amp("bf16")
    model = load(resolve_weights(args.weights)).eval()
    input_size = input_size_of(model)
    data = args.data[0] if len(args.data) == 1 else list(args.data)
    ds = FaceParsingDataset(data, args.layout, args.split, transform=build_eval_transform(input_size, sizes))
    if args.images <= 0:
        raise ValueError(f"--images: must be positive, got {args.images}")
    picks = spread_order(
        sorted({round(i * (len(ds) - 1) / max(1, args.images - 1)) for i in range(min(args.images, len(ds)))})
    )
    names = [REFERENCE] + [f"{a}:{d}" for a, d in variants]
    n = model.num_classes
    cms = {(s, v): ConfusionMatrix(n, IGNORE_INDEX) for s in sizes for v in names}
    same = {(s, v): [] for s in sizes for v in names[1:]}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for k, i in enumerate(picks):
            sample = ds[i]
            image = sample["image"][None]
            for s in sizes:
                ref = labels_of(model, image, s, "none", "dense")
                target = torch.as_tensor(sample["masks"][s])
                cms[s, REFERENCE].update(ref, target)
                for amp, decode in variants:
                    lab = labels_of(model, image, s, amp, decode)
                    cms[s, f"{amp}:{decode}"].update(lab, target)
                    same[s, f"{amp}:{decode}"].append(float((lab == ref).float().mean()))
            print(f"{k + 1}/{len(picks)} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            result = summary(cms, same, sizes, names, model.label_set)
            result.update(
                {
                    "images": k + 1,
                    "of": len(picks),
                    "split": args.split,
                    "input_size": input_size,
                    "torch": torch.__version__,
                    "quantized_engine": torch.backends.quantized.engine,
                }
            )
            if args.json:  # after every image: a cut-short run still leaves its (spread-out) images' numbers
                with open(args.json, "w") as f:
                    f.write(json.dumps(result, indent=2) + "\n")
    return result


def spread_order(items: list[int]) -> list[int]:
    """``items`` reordered so that every prefix is spread over the whole list (bit-reversed positions)."""
    bits = max(1, (len(items) - 1).bit_length())
    return [items[k] for k in sorted(range(len(items)), key=lambda k: int(f"{k:0{bits}b}"[::-1], 2))]


def summary(cms: dict, same: dict, sizes: Sequence[int], names: Sequence[str], label_set: Any) -> dict[str, Any]:
    """Per size: fp32 dense mean F1 and, per variant, pixels as fp32 dense (all, worst image) and mean F1."""
    rows = {}
    for s in sizes:
        ref_f1 = summarize(cms[s, REFERENCE], label_set)["mean_f1"]
        rows[str(s)] = {"fp32_dense_mean_f1": ref_f1}
        for v in names[1:]:
            f1 = summarize(cms[s, v], label_set)["mean_f1"]
            rows[str(s)][v] = {
                "pixels_as_fp32_dense": 100 * sum(same[s, v]) / len(same[s, v]),
                "worst_image": 100 * min(same[s, v]),
                "mean_f1": f1,
                "delta_f1": f1 - ref_f1,
            }
    return {"rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", required=True, help="dataset root (repeat for several)")
    p.add_argument("--layout", default="folder")
    p.add_argument("--split", default="val")
    p.add_argument("--weights", default=None, help="weights (default: the bundled model)")
    p.add_argument("--images", type=int, default=48, help="images, spread evenly over the split")
    p.add_argument("--sizes", default="128,256,512")
    p.add_argument("--variants", default="int8:dense,int8:adaptive", help="PRECISION:DECODE, comma-separated")
    p.add_argument("--json", default=None, help="write the result here too")
    args = p.parse_args(argv)
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
