"""The comparison table of scripts/compare_models.sh (issue #13): params, MACs and FPS of each trained model, its
whole-val scores from ``fpliif eval`` (OUT/NAME/eval.json: all 19 classes; eval_inner.json: the inner classes,
``--score-labels inner``), per-class F1 side by side, as markdown.

    python scripts/compare_table.py ../runs/compare --size 128 --out ../runs/compare/comparison.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

MODELS = ("fpliif", "segface_mnv3", "stn_icnn")
GROUPS = ("eyes", "brows", "mouth", "overall")  # fpliif.labels.HELEN_GROUPS, scored by --score-labels inner


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def measure(weights: Path, size: int, runs: int) -> dict[str, Any]:
    """Params, MACs (:func:`fpliif.flops.count_macs`, as ``fpliif bench --models``) and FPS at size² in and out."""
    from fpliif.bench import measure_fps
    from fpliif.checkpoint import load
    from fpliif.flops import count_macs

    model = load(weights).eval()
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return {
        "params": model.num_parameters(),
        "gmacs": count_macs(model, (size, size), size) / 1e9,
        "fps": measure_fps(model, size, size, torch.device("cpu"), runs, image=image),
    }


def read_eval(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no eval results (run scripts/compare_models.sh first)")
    return json.loads(path.read_text())


def table(out_dir: Path, size: int, runs: int) -> str:
    rows, full, inner = [], {}, {}
    for name in MODELS:
        run = out_dir / name
        full[name], inner[name] = read_eval(run / "eval.json"), read_eval(run / "eval_inner.json")
        m = measure(run / "best.safetensors", size, runs)
        merged = inner[name].get("merged_f1", {})
        rows.append(
            f"| {name} | {m['params']:,} | {m['gmacs']:.2f} | {m['fps']:.1f} | {_f(full[name]['mean_f1'])} "
            f"| {_f(inner[name]['mean_f1'])} | "
            + " | ".join(_f(merged.get(g)) for g in GROUPS)
            + f" | {full[name]['images']} |"
        )
    head = (
        f"| model | params | GMACs {size}² | FPS {size}² (CPU, {torch.get_num_threads()} threads) "
        "| val mean F1 (all) | val mean F1 (inner 8) | eyes | brows | mouth | overall | val images |\n"
        "| --- |" + " ---: |" * 10
    )
    classes = list(full[MODELS[0]]["per_class_f1"])
    per_class = ["| class | " + " | ".join(MODELS) + " |", "| --- |" + " ---: |" * len(MODELS)]
    for c in classes:
        per_class.append(f"| {c} | " + " | ".join(_f(full[n]["per_class_f1"].get(c)) for n in MODELS) + " |")
    return "\n".join(
        [
            head,
            *rows,
            "",
            "Per-class val F1 (all classes; STN-iCNN labels only the inner parts, its other classes are 0 or –):",
            "",
            *per_class,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path, help="the comparison's output folder (OUT of compare_models.sh)")
    p.add_argument("--size", type=int, default=128, help="input and output side for MACs and FPS (default 128)")
    p.add_argument("--runs", type=int, default=5, help="timed forward passes for FPS (default 5)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for FPS (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    text = table(args.out_dir, args.size, args.runs)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
