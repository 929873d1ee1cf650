"""scripts/fill_comparison.py: the ``‹run›`` slots of docs/comparison.md filled from a comparison run's JSON
(scripts/compare_table.py ``--json-out``), every slot from its own number, nothing else touched (issue #13)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
try:
    import fill_comparison
    from compare_table import GROUPS, MODELS
finally:
    sys.path.remove(str(ROOT / "scripts"))

CLASSES = ("background", "skin", "nose", "l_eye")


def facts() -> dict:
    """A run's JSON with a different number in every place (model i, field j -> i + j / 100)."""
    models = {}
    for i, name in enumerate(MODELS, start=1):
        models[name] = {
            "params": 1000 * i,
            "gmacs": i + 0.01,
            "fps": i + 0.02,
            "train_img_per_s": i + 0.03,
            "val_images": 509,
            "mean_f1_all": i + 0.04,
            "mean_f1_inner": i + 0.05,
            "merged_f1": {g: i + 0.1 + k / 100 for k, g in enumerate(GROUPS)},
            "per_class_f1": {
                c: (None if c == "skin" and name == "stn_icnn" else i + 0.5 + k / 100) for k, c in enumerate(CLASSES)
            },
        }
    return {"out_dir": "../runs/compare", "size": 128, "fps_runs": 5, "threads": 2, "torch": "2.x", "models": models}


DOC = """# Title

Slots are marked `‹run›`:

```sh
fill_comparison.py  # fills the ‹run› slots
```

## Results ‹run›

Run: ‹run›

| model | params | GMACs | FPS 128² | train img/s | val mean F1 (all) | val mean F1 (inner 8) | eyes | overall |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| fpliif | ‹run› | ‹run› | ‹run› | ‹run› | ‹run› | ‹run› | ‹run› | ‹run› |
| stn_icnn | ‹run› | ‹run› | ‹run› | ‹run› | not comparable | ‹run› | ‹run› | ‹run› |

| class | fpliif | stn_icnn | published |
| --- | ---: | ---: | ---: |
| skin | ‹run› | ‹run› | 96.6 |
| l_eye | ‹run› | ‹run› | 90.0 |
"""


def test_fill_puts_each_number_in_its_slot():
    out = fill_comparison.fill(DOC, facts()).split("\n")
    assert [line for line in out if "‹run›" in line] == DOC.split("\n")[2:6:3], "mentions in code stay"
    assert out[8] == "## Results"
    assert out[10] == "Run: `../runs/compare`, 509 val images scored, FPS median of 5 runs, 2 torch threads, torch 2.x."
    assert out[14] == "| fpliif | 1,000 | 1.01 | 1.02 | 1.03 | 1.04 | 1.05 | 1.10 | 1.13 |"
    assert out[15] == "| stn_icnn | 3,000 | 3.01 | 3.02 | 3.03 | not comparable | 3.05 | 3.10 | 3.13 |"
    assert out[19] == "| skin | 1.51 | – | 96.6 |"
    assert out[20] == "| l_eye | 1.53 | 3.53 | 90.0 |"


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("| fpliif | ‹run›", "| fpliiff | ‹run›", "line 15.*no model 'fpliiff'"),
        ("| l_eye |", "| l_ey |", "line 21.*no class 'l_ey'"),
        ("| eyes |", "| noses |", "line 15.*unknown column 'noses'"),
        ("Run: ‹run›", "The run: ‹run›", "line 11.*outside a table"),
        ("‹run›", "1", "no ‹run› slots"),
    ],
)
def test_slots_that_cannot_be_filled_are_errors(old, new, match):
    with pytest.raises(ValueError, match=match):
        fill_comparison.fill(DOC.replace(old, new), facts())


def test_the_repository_page_has_only_slots_the_script_fills():
    doc = (ROOT / "docs" / "comparison.md").read_text()
    slots = [line for line in doc.split("\n") if line.startswith(("| ", "#", "Run:")) and "‹run›" in line]
    if not slots:  # (prose may still name the slot marker)
        pytest.skip("docs/comparison.md is already filled")
    run = facts()
    names = [line.split("|")[1].strip() for line in slots if line.startswith("| ")]
    for m in run["models"].values():  # every class row of the page's per-class table
        m["per_class_f1"] = {n: 1.0 for n in names if n not in MODELS}
    filled = fill_comparison.fill(doc, run)
    with pytest.raises(ValueError, match="no ‹run› slots"):  # every slot was filled
        fill_comparison.fill(filled, run)


def test_main_writes_the_filled_page(tmp_path, capsys):
    import json

    (tmp_path / "run.json").write_text(json.dumps(facts()))
    (tmp_path / "doc.md").write_text(DOC)
    args = [str(tmp_path / "run.json"), "--doc", str(tmp_path / "doc.md"), "--out", str(tmp_path / "out.md")]
    assert fill_comparison.main(args) == 0
    assert "‹run›" in (tmp_path / "doc.md").read_text(), "--out leaves the template as it is"
    assert (tmp_path / "out.md").read_text() == fill_comparison.fill(DOC, facts())
    assert fill_comparison.main([str(tmp_path / "missing.json"), "--doc", str(tmp_path / "doc.md")]) == 2
    assert "missing.json" in capsys.readouterr().err
