"""The comparison table of scripts/compare_models.sh (issue #13): params, MACs and FPS of each trained model, its
training throughput (OUT/NAME/bench_train.json: ``fpliif bench --train --json``), its whole-val scores from
``fpliif eval`` (OUT/NAME/eval.json: all 19 classes; eval_inner.json: the inner classes, ``--score-labels
inner``), per-class F1 side by side, as markdown and (``--json-out``) as the JSON that scripts/fill_comparison.py
fills docs/comparison.md from.

    python scripts/compare_table.py ../runs/compare --size 128 --out ../runs/compare/comparison.md \\
        --json-out ../runs/compare/comparison.json
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
    """Params, MACs (:func:`fpliif.bench.flops.count_macs`, as ``fpliif bench --models``), FPS at size² in and out."""
    from fpliif.bench.flops import count_macs
    from fpliif.bench.inference import measure_fps
    from fpliif.models.checkpoint import load

    model = load(weights).eval()
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return {
        "params": model.num_parameters(),
        "gmacs": count_macs(model, (size, size), size) / 1e9,
        "fps": measure_fps(model, size, size, torch.device("cpu"), runs, image=image),
    }


def read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} (run scripts/compare_models.sh first)")
    return json.loads(path.read_text())


def model_facts(run: Path, size: int, runs: int) -> dict[str, Any]:
    """One model's numbers: :func:`measure`, training img/s and its settings, the scores of both evaluations."""
    full = read_json(run / "eval.json", "eval results")
    inner = read_json(run / "eval_inner.json", "eval results (--score-labels inner)")
    (train,) = read_json(run / "bench_train.json", "training throughput (fpliif bench --train --json)")["train"]
    return {
        **measure(run / "best.safetensors", size, runs),
        "train_img_per_s": train["img_per_s"],
        "train_settings": {k: train[k] for k in ("batch_size", "size", "amp", "queries", "objective")},
        "val_images": full["images"],
        "mean_f1_all": full["mean_f1"],
        "mean_f1_inner": inner["mean_f1"],
        "merged_f1": {g: inner.get("merged_f1", {}).get(g) for g in GROUPS},
        "per_class_f1": full["per_class_f1"],
    }


def collect(out_dir: Path, size: int, runs: int) -> dict[str, Any]:
    """Every number of the comparison (JSON-ready): the settings and :func:`model_facts` per model."""
    return {
        "out_dir": str(out_dir),
        "size": size,
        "fps_runs": runs,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "models": {name: model_facts(out_dir / name, size, runs) for name in MODELS},
    }


def table(facts: dict[str, Any]) -> str:
    """:func:`collect`'s numbers as markdown: the summary table, then per-class F1 side by side."""
    size, models = facts["size"], facts["models"]
    rows = [
        f"| {name} | {m['params']:,} | {m['gmacs']:.2f} | {m['fps']:.2f} | {m['train_img_per_s']:.2f} "
        f"| {_f(m['mean_f1_all'])} | {_f(m['mean_f1_inner'])} | "
        + " | ".join(_f(m["merged_f1"][g]) for g in GROUPS)
        + f" | {m['val_images']} |"
        for name, m in models.items()
    ]
    head = (
        f"| model | params | GMACs {size}² | FPS {size}² (CPU, {facts['threads']} threads) | train img/s {size}² "
        "| val mean F1 (all) | val mean F1 (inner 8) | eyes | brows | mouth | overall | val images |\n"
        "| --- |" + " ---: |" * 11
    )
    classes = list(models[MODELS[0]]["per_class_f1"])
    per_class = ["| class | " + " | ".join(models) + " |", "| --- |" + " ---: |" * len(models)]
    for c in classes:
        per_class.append(f"| {c} | " + " | ".join(_f(m["per_class_f1"].get(c)) for m in models.values()) + " |")
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
    p.add_argument("--json-out", type=Path, default=None, help="also write the numbers as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    facts = collect(args.out_dir, args.size, args.runs)
    text = table(facts)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json_out:
        args.json_out.write_text(json.dumps(facts, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
