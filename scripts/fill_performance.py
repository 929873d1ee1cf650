"""Fill the measured parts of docs/performance.md from the JSON files of scripts/speed_table.sh (and the
accuracy table from scripts/precision_agreement.py's JSON), so no timing is typed by hand (issue #12).

Each generated part of the doc sits between ``<!-- speed:NAME -->`` and ``<!-- /speed:NAME -->`` and is
rewritten whole, so filling again from a newer run replaces it: ``machine``, ``aligned``, ``goals``, ``photos``,
``variants`` (from OUT), ``accuracy`` (only with ``--accuracy``). A part whose files are missing is an error
naming the file (the torch.compile runs are optional: their cells then say why they are empty).

    python scripts/fill_performance.py machine OUT/machine.json     # what speed_table.sh records first
    python scripts/fill_performance.py portrait DATA_ROOT           # the 512x512 portrait it times
    python scripts/fill_performance.py fill OUT [--accuracy int8_accuracy.json] [--doc docs/performance.md] [--to FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

AMPS = {"none": "fp32", "bf16": "bf16", "int8": "int8"}
COMPILED = {"none": "fp32 + compile", "bf16": "bf16 + compile"}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
GOAL_FPS, GOAL_RATIO, GOAL_PHOTOS = 5.0, 4.0, 2.0  # issue #12's goals on the 2-core CPU
BOUND_PIXELS, BOUND_F1 = 99.5, 0.2  # issue #12's accuracy bounds against fp32 dense decoding
BLOCK = re.compile(r"(<!-- speed:(\w+) -->\n)(.*?)(<!-- /speed:\2 -->)", re.S)


# --------------------------------------------------------------------------------------------- recording
def machine_facts(weights: str | None = None) -> dict[str, Any]:
    """The machine, versions, weights (default: the bundled ones) and load average, recorded before the timings."""
    import datetime
    import os

    import torch

    from fpliif.bench.cli import weights_for
    from fpliif.precision import cpu_flags, native_bf16

    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    except OSError:
        cpu = "?"
    weights = weights_for(weights)
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_flags": [f for f in CPU_FLAGS if f in cpu_flags()],
        "native_bf16": native_bf16("cpu"),
        "torch": torch.__version__,
        "onnxruntime": ort,
        "quantized_engine": torch.backends.quantized.engine,
        "weights": Path(weights).name if weights else None,
        "load_average": list(os.getloadavg()),
    }


def portrait(root: str) -> Path:
    """The 512x512 portrait photo timed end to end: the first val image (by name) of a ``folder``-layout set."""
    from fpliif.data.layouts import scan_layout

    samples = sorted(scan_layout(root, "folder", "val").samples, key=lambda s: s.name)
    if not samples:
        raise ValueError(f"{root}: no val images")
    return Path(samples[0].image_path)


# --------------------------------------------------------------------------------------------- reading
def read_json(path: Path, optional: bool = False) -> dict[str, Any] | None:
    """The JSON object in ``path``; None for a missing ``optional`` file, else a ValueError naming it."""
    if not path.is_file():
        if optional:
            return None
        raise ValueError(f"{path}: missing (run scripts/speed_table.sh {path.parent})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_run(out: Path) -> dict[str, Any]:
    """Every file of one speed_table.sh run, by name (compile runs None where they failed or were skipped)."""
    run: dict[str, Any] = {"machine": read_json(out / "machine.json")}
    run.update({f"onnx{k}": read_json(out / f"aligned_onnx{k}.json") for k in ("", "_int8")})
    for amp in AMPS:
        run[f"aligned_{amp}"] = read_json(out / f"aligned_{amp}.json")
        run[f"photos_{amp}"] = read_json(out / f"photos_{amp}.json")
    for amp in COMPILED:
        run[f"compile_{amp}"] = read_json(out / f"compile_{amp}.json", optional=True)
    return run


def _fps(result: dict[str, Any], mode: str, size: str, name: str) -> float:
    try:
        return float(result["fps"][mode][size])
    except (KeyError, TypeError):
        raise ValueError(f"{name}: no fps for decode {mode!r} at size {size}") from None


def portrait_rate(photos: dict[str, Any], name: str) -> float:
    """Photos/s of adaptive decoding on the 512x512 portrait (the one 512x512 photo that is not bundled)."""
    for row in photos["photos"]:
        if row["size"][:2] == [512, 512] and "/assets/" not in row["photo"]:
            return 1.0 / row["seconds"]["adaptive"]
    raise ValueError(f"{name}: no 512x512 portrait photo among {[r['photo'] for r in photos['photos']]}")


# --------------------------------------------------------------------------------------------- parts
def part_machine(run: dict[str, Any]) -> str:
    m, ref = run["machine"], run["aligned_none"]
    flags = ", ".join(f"`{f}`" for f in m["cpu_flags"]) or "none of " + ", ".join(CPU_FLAGS)
    load = ", ".join(f"{v:.2f}" for v in m["load_average"])
    return (
        f"Measured {m['date']} by `scripts/speed_table.sh` on `{m['cpu']}` ({m['cores']} cores; flags: {flags}; "
        f"native bf16: {'yes' if m['native_bf16'] else 'no'}), torch {m['torch']}, onnxruntime {m['onnxruntime']}, "
        f"quantized engine {m['quantized_engine']}, {ref['threads']} threads. Weights `{m['weights']}` at their own "
        f"{ref['input_size']}² input. Load average before the run: {load} (1, 5, 15 min).\n"
    )


def part_aligned(run: dict[str, Any]) -> str:
    ref = run["aligned_none"]
    cols = [(f"img/s {label}", run[f"aligned_{amp}"], f"aligned_{amp}.json") for amp, label in AMPS.items()]
    cols.append(("img/s onnxruntime", run["onnx"], "aligned_onnx.json"))
    cols.append(("img/s onnxruntime int8", run["onnx_int8"], "aligned_onnx_int8.json"))
    head = "| output | decode | points | GMACs run | " + " | ".join(c[0] for c in cols) + " |"
    lines = [head, "|---:|---|---:|---:|" + "---:|" * len(cols)]
    for size in ref["macs"]:
        for mode in ref["decode"]:
            cells = [f"{_fps(r, mode, size, name):.2f}" for _, r, name in cols]
            macs = ref["macs_executed"][mode][size] / 1e9
            lines.append(
                f"| {size} | {mode} | {ref['points'][mode][size]:,} | {macs:.1f} | " + " | ".join(cells) + " |"
            )
    lines.append("")
    lines.append(
        f"Median of {ref['runs']} runs after 2 warm-ups per cell; points and GMACs (what executed) are counted once, "
        f"in fp32, and are the same for every column."
    )
    return "\n".join(lines) + "\n"


def part_goals(run: dict[str, Any]) -> str:
    rates = []
    for amp, label in AMPS.items():
        r = run[f"aligned_{amp}"]
        a, d = _fps(r, "adaptive", "256", f"aligned_{amp}.json"), _fps(r, "dense", "256", f"aligned_{amp}.json")
        rates.append((label, a, a / d, a >= GOAL_FPS and a / d >= GOAL_RATIO))
    met = [label for label, *_, ok in rates if ok]
    aligned = ", ".join(f"{label} **{a:.2f}** img/s ({x:.1f}× dense)" for label, a, x, _ in rates)
    photos = [(label, portrait_rate(run[f"photos_{amp}"], f"photos_{amp}.json")) for amp, label in AMPS.items()]
    photo_met = [label for label, p in photos if p >= GOAL_PHOTOS]
    return (
        f"* Aligned crop at 256² (adaptive, same run as dense): {aligned}. Goal ≥ {GOAL_FPS:g} img/s and "
        f"≥ {GOAL_RATIO:g}× dense: {'met with ' + ', '.join(met) if met else '**not met**'}.\n"
        f"* 512×512 portrait end to end (adaptive): "
        + ", ".join(f"{label} **{p:.2f}** photos/s" for label, p in photos)
        + f". Goal ≥ {GOAL_PHOTOS:g} photos/s: {'met with ' + ', '.join(photo_met) if photo_met else '**not met**'}.\n"
    )


def part_photos(run: dict[str, Any]) -> str:
    ref = run["photos_none"]
    others = [(label, run[f"photos_{amp}"]) for amp, label in AMPS.items() if amp != "none"]
    head = "| photo | size | faces | dense s | adaptive s | " + " | ".join(f"adaptive s, {lb}" for lb, _ in others)
    lines = [head + " | labels as dense (fp32) |", "|---|---|---:|---:|---:|" + "---:|" * (len(others) + 1)]
    for k, row in enumerate(ref["photos"]):
        h, w = row["size"][:2]
        sec = [
            row["seconds"]["dense"],
            row["seconds"]["adaptive"],
            *(p["photos"][k]["seconds"]["adaptive"] for _, p in others),
        ]
        same = 100 * row["agreement_with_dense"]["adaptive"]
        cells = " | ".join(f"{v:.3f}" for v in sec)
        lines.append(f"| `{Path(row['photo']).name}` | {w}×{h} | {row['faces']} | {cells} | {same:.2f} % |")
    rates = [ref["photos_per_s"]["dense"], ref["photos_per_s"]["adaptive"]]
    rates += [p["photos_per_s"]["adaptive"] for _, p in others]
    lines.append("| **photos/s** | | | " + " | ".join(f"{v:.2f}" for v in rates) + " | |")
    lines.append("")
    lines.append(f"Median of {ref['runs']} runs after 1 warm-up per photo and mode, {ref['threads']} threads.")
    return "\n".join(lines) + "\n"


def _variant_cells(run: dict[str, Any], get: Callable[[dict[str, Any], str], str]) -> list[str]:
    cells = [get(run[f"aligned_{amp}"], f"aligned_{amp}.json") for amp in ("none", "int8", "bf16")]
    for amp in COMPILED:
        result = run[f"compile_{amp}"]
        cells.append(get(result, f"compile_{amp}.json") if result is not None else "failed or not run")
    return cells


def part_variants(run: dict[str, Any]) -> str:
    labels = [AMPS["none"], AMPS["int8"], AMPS["bf16"], *COMPILED.values()]
    lines = ["| 256² | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for mode in ("dense", "adaptive"):
        cells = _variant_cells(run, lambda r, name, mode=mode: f"{_fps(r, mode, '256', name):.2f}")
        lines.append(f"| {mode}, img/s | " + " | ".join(cells) + " |")
    first = _variant_cells(run, lambda r, name: f"{r['first_call_s']['dense']['256']:.1f}")
    lines.append("| first call, s (compilation included) | " + " | ".join(first) + " |")
    photos = [f"{portrait_rate(run[f'photos_{amp}'], f'photos_{amp}.json'):.2f}" for amp in ("none", "int8", "bf16")]
    lines.append("| 512² portrait, photos/s (adaptive) | " + " | ".join(photos) + " | — | — |")
    return "\n".join(lines) + "\n"


def part_accuracy(acc: dict[str, Any]) -> str:
    lines = [
        "| output | images | variant | pixels as fp32 dense | worst image | mean F1 fp32 dense | mean F1 | Δ F1 "
        "| bounds |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for size, row in acc["rows"].items():
        for variant, v in row.items():
            if variant == "fp32_dense_mean_f1":
                continue
            pixels, delta = v["pixels_as_fp32_dense"], v["delta_f1"]
            ok = pixels >= BOUND_PIXELS and abs(delta) <= BOUND_F1
            lines.append(
                f"| {size} | {acc['images']} | {variant} | {pixels:.2f} % | {v['worst_image']:.2f} % "
                f"| {row['fp32_dense_mean_f1']:.2f} | {v['mean_f1']:.2f} | {delta:+.2f} | "
                f"{'within' if ok else '**outside**'} |"
            )
    lines.append("")
    lines.append(
        f"{acc['images']} of {acc['of']} val images spread over the split (input {acc['input_size']}², torch "
        f"{acc['torch']}, quantized engine {acc['quantized_engine']}); bounds: ≥ {BOUND_PIXELS} % of pixels as fp32 "
        f"dense and |Δ F1| ≤ {BOUND_F1}."
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- filling
def fill(doc: str, parts: dict[str, str]) -> str:
    """``doc`` with the ``<!-- speed:NAME -->`` parts named in ``parts`` rewritten; ValueError for a part the
    doc lacks or a marked part this script does not know."""
    known = {"machine", "aligned", "goals", "photos", "variants", "accuracy"}
    found = [m.group(2) for m in BLOCK.finditer(doc)]
    unknown = sorted(set(found) - known)
    if unknown:
        raise ValueError(f"the doc marks parts this script does not fill: {unknown} (known: {sorted(known)})")
    missing = sorted(set(parts) - set(found))
    if missing:
        raise ValueError(f"the doc has no <!-- speed:NAME --> ... <!-- /speed:NAME --> part for {missing}")
    return BLOCK.sub(lambda m: m.group(1) + parts.get(m.group(2), m.group(3)) + m.group(4), doc)


def run_parts(out: Path) -> dict[str, str]:
    run = load_run(out)
    builders = {"machine": part_machine, "aligned": part_aligned, "goals": part_goals}
    builders.update({"photos": part_photos, "variants": part_variants})
    return {name: build(run) for name, build in builders.items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("machine", help="write the machine facts JSON")
    m.add_argument("path", type=Path)
    m.add_argument("--weights", default=None, help="the weights timed (default: the bundled model)")
    q = sub.add_parser("portrait", help="print the path of the 512x512 portrait photo")
    q.add_argument("data")
    f = sub.add_parser("fill", help="fill the doc's measured parts")
    f.add_argument("out", type=Path, nargs="?", help="speed_table.sh's output folder")
    f.add_argument("--accuracy", type=Path, help="scripts/precision_agreement.py --json output")
    f.add_argument("--doc", type=Path, default=Path("docs/performance.md"))
    f.add_argument("--to", type=Path, default=None, help="write here (default: the doc, in place)")
    args = p.parse_args(argv)
    try:
        if args.command == "machine":
            args.path.write_text(json.dumps(machine_facts(args.weights), indent=2) + "\n")
        elif args.command == "portrait":
            print(portrait(args.data))
        else:
            if args.out is None and args.accuracy is None:
                raise ValueError("fill: give speed_table.sh's OUT folder and/or --accuracy FILE")
            parts = run_parts(args.out) if args.out is not None else {}
            if args.accuracy is not None:
                parts["accuracy"] = part_accuracy(read_json(args.accuracy))
            (args.to or args.doc).write_text(fill(args.doc.read_text(), parts))
    except ValueError as e:
        print(f"fill_performance: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
