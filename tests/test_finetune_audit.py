"""Cases a new-user audit found when fine-tuning the bundled model on a folder dataset with its own classes.txt,
each as it was reported: the background left out of the means only when named "background", a UTF-8 BOM in
classes.txt, duplicate names without their lines, PIL's buffer repr in a corrupt image's error, ``--dry-run``
passing configs the run refuses (and failed starts leaving empty run folders), left/right pairs found for
``l_``/``r_`` names only, subfolders passed over silently, a remap error suggesting a refused option, and the
fine-tuning docs. Tiny model and data."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import fpliif
from conftest import TINY_SPEC
from fpliif.cli import main
from fpliif.data.layouts import check_root, label_set_for, read_classes_txt
from fpliif.errors import DataError
from fpliif.eval.evaluate import excluded_classes, summarize
from fpliif.eval.metrics import ConfusionMatrix
from fpliif.labels import CELEBAMASK_HQ, HELEN, LABEL_SETS, generic_label_set, left_right_pairs
from test_data_helpers import make_folder

ROOT = Path(__file__).resolve().parents[1]
OWN = ["bg", "face", "hair"]  # class 0 is the background, whatever its name


@pytest.fixture
def own_root(tmp_path) -> Path:
    """A folder dataset with its own 3 classes: face000-007 train, face008 val (the hash split)."""
    root = tmp_path / "mine"
    make_folder(root, n=9, num_classes=len(OWN))
    (root / "classes.txt").write_text("\n".join(OWN) + "\n")
    return root


def _config(tmp_path: Path, root: Path, **train: object) -> Path:
    args = {**TINY_SPEC["args"], "classes": OWN}
    cfg = {
        "model": {"name": "fpliif", "args": args},
        "data": {"root": str(root), "layout": "folder", "size": 32, "workers": 0, "augment": None},
        "train": {"epochs": 1, "batch_size": 2, "sample_queries": 64, "threads": 1, "device": "cpu", **train},
        "out": str(tmp_path / "run"),
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------------------------------------ 1. background
def test_class_0_is_the_excluded_background_whatever_its_name():
    """Before: only a class literally named "background" was left out, so "bg" counted in the mean."""
    for s in LABEL_SETS.values():  # the built-in sets: unchanged
        assert excluded_classes(s) == (s.classes.index("background"),) == (0,)
    own = generic_label_set(OWN)
    assert excluded_classes(own) == (0,)
    cm = ConfusionMatrix(3, 255)
    cm.update(torch.tensor([[0, 0, 1, 2]]), torch.tensor([[0, 1, 1, 2]]))  # bg F1 2/3, face 2/3, hair 1
    row = summarize(cm, own)
    assert row["mean_f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)


# ------------------------------------------------------------------------------------------------ 2., 3. classes.txt
def test_classes_txt_with_a_byte_order_mark(tmp_path):
    """Before: Notepad's BOM became part of the first name ('\\ufeffbackground'), silently another class list."""
    path = tmp_path / "classes.txt"
    path.write_bytes(("\ufeff" + "\n".join(CELEBAMASK_HQ.classes) + "\n").encode("utf-8"))
    assert read_classes_txt(path)[0] == "background"
    assert label_set_for("folder", tmp_path) is CELEBAMASK_HQ


def test_duplicate_class_names_are_named_with_their_lines(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("background\nhair\n# a comment\nface\nhair\nface\nnose\n")
    with pytest.raises(DataError, match=r"duplicate class names: 'hair' on lines 2, 5; 'face' on lines 4, 6"):
        read_classes_txt(path)


def test_custom_classes_are_called_custom_everywhere(own_root, tmp_path):
    """Before: `fpliif data check` and eval's JSON called them after the folder ('mine'), info and parse 'custom'."""
    assert label_set_for("folder", own_root).name == "custom"
    helen = tmp_path / "helen"  # a folder named after a built-in set with its classes: that set
    helen.mkdir()
    (helen / "classes.txt").write_text("\n".join(HELEN.classes))
    assert label_set_for("folder", helen) is HELEN


# ------------------------------------------------------------------------------------------------ 4. dry run
def test_dry_run_makes_the_checks_the_run_makes(tmp_path, own_root, tiny_file, capsys):
    """Before: each of these passed --dry-run (exit 0) and failed in the run."""
    cfg = _config(tmp_path, own_root, init_weights=tiny_file)
    assert main(["train", "--config", str(cfg), "--dry-run"]) == 0
    assert "init_weights" in capsys.readouterr().err  # what the warm start will copy
    cases = [
        ("data.root=no/such/root", f"dataset root no/such/root (resolved against the current directory: {Path.cwd()}"),
        ("train.init_weights=no-such-weights", "train.init_weights: weights 'no-such-weights': no such file"),
        (f"model.args={{classes: [bg, hair, face], width: {TINY_SPEC['args']['width']}}}", "same order"),
        ("model.args={classes: [bg, face, hair], width: 12, decoder_mlp: [24, 24]}", "parameters match the file's"),
        ("train.batch_size=9", "exceeds the 8 training images"),
    ]
    for override, text in cases:
        assert main(["train", "--config", str(cfg), "--dry-run", override]) == 2, override
        assert text in capsys.readouterr().err, override
    assert not (tmp_path / "run").exists()


def test_a_run_checks_before_loading_the_weights_and_leaves_no_empty_run_folder(
    tmp_path, own_root, tiny_file, monkeypatch, capsys
):
    """Before: the weights were loaded before the classes were compared, and a failed start left an empty run
    folder behind."""
    import fpliif.models.checkpoint as checkpoint

    def no_load(*args, **kwargs):
        raise ValueError("init weights loaded")

    monkeypatch.setattr(checkpoint, "load", no_load)
    cfg = _config(tmp_path, own_root, init_weights=tiny_file)
    assert main(["train", "--config", str(cfg), "--no-progress", "model.args={classes: [bg, hair, face]}"]) == 2
    assert "same order" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--no-progress"]) == 2  # the checks pass; loading fails here
    assert "init weights loaded" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()  # the user's own (empty) folder is kept
    assert main(["train", "--config", str(cfg), "--no-progress", "data.root=nowhere"]) == 2
    assert (tmp_path / "run").is_dir()


# ------------------------------------------------------------------------------------------------ 5. flip pairs
@pytest.mark.parametrize(
    "left, right",
    [("l_eye", "r_eye"), ("left_eye", "right_eye"), ("eye_l", "eye_r"), ("L_eye", "R_eye"), ("eye_left", "eye_right")]
    + [("Left_Brow", "right_brow"), ("EYE_L", "eye_R")],
)
def test_left_right_pairs_of_common_spellings(left, right):
    """Before: only l_*/r_* paired, so a flip left 'left_eye' where the eye now is on the right."""
    assert left_right_pairs(["bg", right, "face", left]) == ((3, 1),)
    assert left_right_pairs(["bg", left, "face"]) == ()  # only when both exist
    lut = generic_label_set(["bg", left, right]).flip_lut()
    assert (lut[1], lut[2]) == (2, 1)


def test_the_built_in_sets_keep_their_pairs():
    for s in LABEL_SETS.values():
        assert generic_label_set(s.classes).flip_pairs == s.flip_pairs, s.name
    assert left_right_pairs(["background", "neck_l", "ear_r", "l_lip", "u_lip"]) == ()  # CelebAMask's non-sides


def test_the_pairing_rule_is_in_the_fine_tuning_docs():
    text = (ROOT / "docs" / "training.md").read_text()
    section = text[text.index("## Fine-tuning to your own data") : text.index("## The data behind")]
    assert all(f"`{w}`" in section for w in ("l_", "r_", "left_", "right_", "_l", "_r", "_left", "_right"))


# ------------------------------------------------------------------------------------------------ 6. passed over
def test_subfolders_and_stray_files_are_reported_not_passed_over_silently(own_root, caplog):
    """Before: `fpliif data check` said "9 good" for a pair in images/sub/ and masks/sub/, with no word of it."""
    from fpliif.data import FaceParsingDataset, check_dataset
    from fpliif.data.check import format_report

    for kind, ext in (("images", ".png"), ("masks", ".png")):
        (own_root / kind / "sub").mkdir()
        (own_root / kind / "face000.png").rename(own_root / kind / "sub" / f"face000{ext}")
    (own_root / "images" / "notes.txt").write_text("x")
    report = check_dataset(own_root, "folder", workers=0, progress=False)
    expected = sorted([f"{own_root / 'images/sub'}/", f"{own_root / 'masks/sub'}/", str(own_root / "images/notes.txt")])
    assert sorted(report["passed_over"]) == expected and report["checked_ok"] == 8 and not report["bad"]
    text = format_report(report)
    assert "3 passed over" in text and "passed over: 3 not read (the layout reads no subfolders" in text
    with caplog.at_level(logging.WARNING, logger="fpliif.data"):
        assert len(FaceParsingDataset(own_root, "folder", "train")) == 7
    assert "3 not read" in caplog.text and str(own_root / "images" / "sub/") in caplog.text


# ------------------------------------------------------------------------------------------------ 7. remapping
def test_a_custom_set_has_no_remappings_and_the_error_suggests_none():
    """Before: "no mapping from label set 'custom' to 'coarse'; 'custom' maps to: custom" (and --labels custom is
    refused)."""
    with pytest.raises(ValueError) as e:
        generic_label_set(OWN).remap_to("coarse")
    text = str(e.value)
    assert "maps to" not in text and "a custom class list (bg, face, hair) has no remappings" in text
    assert "celebamask-hq -> lapa, helen, coarse, inner" in text


# ------------------------------------------------------------------------------------------------ 8. docs
def test_the_fine_tuning_recipe_uses_the_bundled_models_input_size():
    """Before: the recipe trained the bundled model (128² input, fpliif info) at 256²."""
    from fpliif.models.checkpoint import read_metadata

    text = (ROOT / "docs" / "training.md").read_text()
    recipe = text[text.index("# my_faces.yaml") :]
    size = int(re.search(r"data: \{[^}]*size: (\d+)", recipe).group(1))
    assert size == read_metadata(None).input_size


def test_a_missing_relative_root_is_named_as_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'data'}) does not exist")):
        check_root("data")


def test_a_fine_tuned_model_keeps_its_flip_pairs(tmp_path):
    model = fpliif.make({"name": "fpliif", "args": {**TINY_SPEC["args"], "classes": ["bg", "eye_left", "eye_right"]}})
    assert model.label_set.flip_pairs == ((1, 2),)
    assert np.array_equal(model.label_set.flip_lut()[:3], [0, 2, 1])
