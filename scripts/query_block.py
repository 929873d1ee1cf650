"""Decoder speed against the CPU query block (``fpliif.models.fpliif.CPU_QUERY_BLOCK``), fp32 and bf16 (issue 12).

    python scripts/query_block.py [--size 256] [--blocks 65536,16384,8192,4096,2048,1024] [--runs 3] [--threads 2]
        [--onnx SPLIT.onnx]

Encodes one random 128² input with the bundled model, then decodes every pixel centre of a ``--size``² grid
(dense) with each block size in turn, in one process, and prints the median seconds per grid and the largest
logit difference from the first block size (the blocks change the speed, never the logits). An idle machine
gives the timings of docs/performance.md ("Query blocks"). ``--onnx``: the query chunks (``OnnxModel.chunk_size``)
of a split export's decoder graph on onnxruntime instead (``fpliif export onnx --out SPLIT.onnx --dynamic``; the
default chunk :data:`fpliif.infer.onnx_backend.CPU_SPLIT_CHUNK`), block sizes interleaved run by run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import fpliif.models.fpliif as fpliif_model
from fpliif.models import pixel_centers
from fpliif.models.checkpoint import input_size_of, load
from fpliif.models.pretrained import resolve_weights
from fpliif.validate import int_arg, parse_int_list


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int_arg(8, 2048), default=256)
    p.add_argument("--blocks", default="65536,16384,8192,4096,2048,1024")
    p.add_argument("--runs", type=int_arg(1), default=3)
    p.add_argument("--threads", type=int_arg(1), default=2)
    p.add_argument("--onnx", default=None, help="a split ONNX export: time its decoder graph's query chunks")
    args = p.parse_args(argv)
    blocks = parse_int_list(args.blocks, "--blocks")
    if args.onnx:
        return onnx_chunks(args, blocks)
    torch.set_num_threads(args.threads)
    model = load(resolve_weights(None)).eval()
    n = input_size_of(model)
    image = torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(0))
    coords = pixel_centers(args.size, args.size)[None]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for amp, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        rows = out.setdefault(amp, {})
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            grid = model.prepare(model.encode(image))
            reference = None
            for block in blocks:
                fpliif_model.CPU_QUERY_BLOCK = block
                logits = model.decode_prepared(grid, coords, chunk_size=max(blocks)).float()  # warm-up
                reference = logits if reference is None else reference
                times = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    model.decode_prepared(grid, coords, chunk_size=max(blocks))
                    times.append(time.perf_counter() - start)
                rows[str(block)] = {
                    "seconds": round(statistics.median(times), 4),
                    "max_abs_diff": float((logits - reference).abs().max()),
                }
    print(json.dumps({"size": args.size, "threads": args.threads, "torch": torch.__version__, "blocks": out}, indent=1))
    return 0


def onnx_chunks(args: argparse.Namespace, blocks: list[int]) -> int:
    """--onnx: median seconds per dense grid of the split export's decoder per query chunk size."""
    from fpliif.infer.onnx_backend import OnnxModel

    model = OnnxModel(args.onnx, threads=args.threads)
    if not model.split:
        raise SystemExit(f"--onnx {args.onnx}: a single-graph export; pass a split one (export without --single-graph)")
    n = model.input_size
    image = torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(0)).numpy()
    latent = model.encode(image)
    coords = pixel_centers(args.size, args.size)[None].numpy()
    times: dict[int, list[float]] = {b: [] for b in blocks}
    reference, diffs = None, {}
    for _ in range(args.runs + 1):  # the first round warms up
        for block in blocks:
            model.chunk_size = block
            start = time.perf_counter()
            logits = model.query(latent, coords)
            times[block].append(time.perf_counter() - start)
            reference = logits if reference is None else reference
            diffs[block] = float(abs(logits - reference).max())
    rows = {str(b): {"seconds": round(statistics.median(t[1:]), 4), "max_abs_diff": diffs[b]} for b, t in times.items()}
    print(json.dumps({"size": args.size, "threads": args.threads, "onnx": str(args.onnx), "chunks": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
