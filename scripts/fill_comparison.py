"""Fill the ``‹run›`` slots of docs/comparison.md from a comparison run's JSON (scripts/compare_table.py
``--json-out``), so no number of the run is typed by hand (issue #13).

Slots are table cells: in a table whose first column is ``model`` a row names a model and each column one of its
numbers (params, GMACs, FPS, train img/s, val mean F1 all / inner, the merged groups); in a table whose first
column is ``class`` a row names a class and each column a model (its per-class val F1). Also the ``Run: ‹run›``
line (the run's settings) and the ``‹run›`` marks of headings. Cells that are not slots (published numbers, "–")
are left as they are, and so are mentions of the mark in code (inline in backticks, or in a fenced block).
Every slot must be filled: an unknown row or column, or a number missing from the JSON, is an error naming the
doc's line.

    python scripts/fill_comparison.py ../runs/compare/comparison.json --doc docs/comparison.md [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SLOT = "‹run›"


def _num(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def model_cell(m: dict[str, Any], column: str) -> str:
    """A model's number for a summary-table column (ValueError for a column this script does not know)."""
    if column == "params":
        return f"{m['params']:,}"
    prefixes = {"GMACs": ("gmacs", 2), "FPS": ("fps", 2), "train img/s": ("train_img_per_s", 2)}
    for prefix, (key, digits) in prefixes.items():
        if column.startswith(prefix):
            return _num(m[key], digits)
    if column == "val mean F1 (all)":
        return _num(m["mean_f1_all"])
    if column == "val mean F1 (inner 8)":
        return _num(m["mean_f1_inner"])
    if column in m["merged_f1"]:  # Helen's merged groups (eyes, brows, mouth, overall)
        return _num(m["merged_f1"][column])
    raise ValueError(f"unknown column {column!r}")


def cell(facts: dict[str, Any], first: str, row: str, column: str) -> str:
    """The value of the slot in row ``row``, column ``column`` of a table whose first column is ``first``."""
    models = facts["models"]
    if first == "model":
        if row not in models:
            raise ValueError(f"no model {row!r} in the run (it has {sorted(models)})")
        return model_cell(models[row], column)
    if first == "class":
        if column not in models:
            raise ValueError(f"column {column!r} is no model of the run ({sorted(models)})")
        per_class = models[column]["per_class_f1"]
        if row not in per_class:
            raise ValueError(f"no class {row!r} in {column}'s per-class F1")
        return _num(per_class[row])
    raise ValueError(f"a table whose first column is {first!r} has no slots this script fills")


def run_line(facts: dict[str, Any]) -> str:
    """The ``Run:`` line: where the numbers come from and how they were measured."""
    images = sorted({m["val_images"] for m in facts["models"].values()})
    return (
        f"Run: `{facts['out_dir']}`, {' / '.join(map(str, images))} val images scored, FPS median of "
        f"{facts['fps_runs']} runs, {facts['threads']} torch threads, torch {facts['torch']}."
    )


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def fill(doc: str, facts: dict[str, Any]) -> str:
    """``doc`` with every slot filled from ``facts``; ValueError naming the line of a slot that cannot be."""
    lines, header, filled, fenced = doc.split("\n"), None, 0, False
    for i, line in enumerate(lines):
        fenced ^= line.startswith("```")
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = _cells(line)
        if fenced or SLOT not in line.replace(f"`{SLOT}`", ""):
            continue
        try:
            if line.startswith("#"):
                lines[i] = line.replace(f" {SLOT}", "")
            elif line.startswith("Run: "):
                lines[i] = run_line(facts)
            elif header is not None and line.startswith("|"):
                cells = _cells(line)
                values = [cell(facts, header[0], cells[0], header[j]) if c == SLOT else c for j, c in enumerate(cells)]
                lines[i] = "| " + " | ".join(values) + " |"
            else:
                raise ValueError("a slot outside a table, a heading or the Run: line")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"line {i + 1}: {line.strip()[:80]!r}: {e}") from None
        filled += 1
    if not filled:
        raise ValueError(f"no {SLOT} slots to fill (already filled? the template is in git: docs/comparison.md)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("facts", type=Path, help="the run's JSON (compare_table.py --json-out)")
    p.add_argument("--doc", type=Path, default=Path("docs/comparison.md"), help="the page with the slots")
    p.add_argument("--out", type=Path, default=None, help="where the filled page goes (default: --doc, in place)")
    args = p.parse_args(argv)
    try:
        facts = json.loads(args.facts.read_text())
        text = fill(args.doc.read_text(), facts)
    except (OSError, ValueError) as e:
        print(f"fill_comparison: {e}", file=sys.stderr)
        return 2
    out = args.out or args.doc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"filled {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
