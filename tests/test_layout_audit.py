"""What a new-user audit of the published LaPa, Helen and CelebAMask-HQ layouts found: several roots checked with
their own splits, a prepared cache usable by every command, Helen's ``_viz.jpg`` files, a moved root keeping its
cache, and errors that say which folder was meant."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from fpliif.cli import main
from fpliif.data import FaceParsingDataset, detect_layout, list_samples, prepare_celebamask
from fpliif.data.check import check_dataset
from fpliif.data.layouts import SplitMissing
from fpliif.train.config import load_config
from fpliif.train.preflight import check_run
from test_data_helpers import CELEBA_SPLIT, make_celebamask, make_helen, make_lapa


@pytest.fixture
def celeba(tmp_path):
    root = tmp_path / "CelebAMask-HQ"
    make_celebamask(root)
    return root


# ---------------------------------------------------------------- 1. data check: each root with its own splits
@pytest.mark.parametrize("helen_first", [True, False])
def test_data_check_reads_each_roots_own_splits(tmp_path, helen_first):
    """Before: the splits of the first root only (Helen first: LaPa's val never decoded; LaPa first: "helen/val is
    missing")."""
    lapa, helen = tmp_path / "lapa", tmp_path / "helen"
    make_lapa(lapa)  # train 3, val 2, test 2
    make_helen(helen)  # train 3, test 2 (no val)
    (lapa / "val" / "images" / "val_1.png").write_bytes(b"")  # a bad file only in LaPa's val
    roots = [helen, lapa] if helen_first else [lapa, helen]
    report = check_dataset(roots, "helen", workers=0, progress=False)
    per_root = {r["root"]: r["splits"] for r in report["per_root"]}
    assert per_root == {str(lapa): {"train": 3, "val": 2, "test": 2}, str(helen): {"train": 3, "test": 2}}
    assert report["splits"] == {"train": 6, "val": 2, "test": 4}
    assert [b["path"] for b in report["bad"]] == [str(lapa / "val" / "images" / "val_1.png")]


def test_data_check_given_splits_apply_to_every_root(tmp_path):
    lapa, helen = tmp_path / "lapa", tmp_path / "helen"
    make_lapa(lapa)
    make_helen(helen)
    with pytest.raises(SplitMissing, match=r"helen has no 'val' split|no validation split"):
        check_dataset([lapa, helen], "helen", splits=["val"], workers=0, progress=False)


# ---------------------------------------------------------------- 2. one cache for prepare, eval, check and train
def test_eval_and_calibrate_take_the_cache_of_prepare(celeba, tmp_path, tiny_file, capsys):
    cache = tmp_path / "my-cache"
    assert main(["data", "prepare", "--data", str(celeba), "--cache", str(cache), "--no-progress"]) == 0
    capsys.readouterr()
    base = ["--weights", tiny_file, "--data", str(celeba), "--workers", "0", "--no-progress"]
    assert main(["eval", *base, "--sizes", "32", "--lowres", "", "--json"]) == 2  # no cache in the default places
    err = capsys.readouterr().err
    assert f"fpliif data prepare --data {celeba}`" in err and "--cache DIR to fpliif eval" in err
    assert "data.cache=DIR to fpliif train" in err
    assert main(["eval", *base, "--cache", str(cache), "--sizes", "32", "--lowres", "", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1  # the test split
    out = tmp_path / "cal.safetensors"
    argv = ["calibrate", *base, "--cache", str(cache), "--out", str(out), "--images", "2", "--size", "16"]
    assert main(argv) == 0 and out.is_file()
    capsys.readouterr()


def test_cache_option_is_refused_for_layouts_without_a_cache(tmp_path, tiny_file, capsys):
    make_lapa(tmp_path / "lapa")
    assert main(["eval", "--weights", tiny_file, "--data", str(tmp_path / "lapa"), "--cache", str(tmp_path)]) == 2
    assert "--cache applies to the celebamask-hq layout only ('lapa'" in capsys.readouterr().err
    assert main(["data", "check", "--data", str(tmp_path / "lapa"), "--cache", str(tmp_path)]) == 2
    assert "--cache applies to the celebamask-hq layout only" in capsys.readouterr().err


def _train_cfg(tmp_path, *overrides: str) -> dict:
    return load_config(None, [f"out={tmp_path / 'run'}", "train.batch_size=1", *overrides])


def test_train_config_data_cache_is_passed_to_the_datasets(celeba, tmp_path):
    cache = tmp_path / "my-cache"
    prepare_celebamask(celeba, cache=cache, workers=0, progress=False)
    cfg = _train_cfg(tmp_path, f"data.root={celeba}", "data.layout=celebamask-hq")
    assert cfg["data"]["cache"] is None
    with pytest.raises(FileNotFoundError, match="data.cache=DIR to fpliif train"):
        check_run(cfg)
    checked = check_run(_train_cfg(tmp_path, f"data.root={celeba}", "data.layout=celebamask-hq", f"data.cache={cache}"))
    assert checked.train_set.cache_dir == cache and checked.val_set.cache_dir == cache
    lapa = tmp_path / "lapa"
    make_lapa(lapa)
    cfg = _train_cfg(tmp_path, f"data.root={lapa}", "data.layout=lapa", f"data.cache={cache}")
    with pytest.raises(ValueError, match="data.cache applies to the celebamask-hq layout only"):
        check_run(cfg)


# ---------------------------------------------------------------- 3. Helen's *_viz.jpg
def test_helen_release_viz_files_are_known_and_not_reported(tmp_path, caplog):
    make_helen(tmp_path)
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            Image.new("RGB", (32, 32)).save(tmp_path / split / f"{split}{i}_viz.jpg")
    (tmp_path / "test" / "notes.txt").write_text("x")  # other files are still listed
    with caplog.at_level(logging.WARNING, logger="fpliif.data"):
        ds = FaceParsingDataset(tmp_path, "helen", "test")
    assert len(ds) == 2 and "_viz.jpg" not in caplog.text and "notes.txt" in caplog.text
    report = check_dataset(tmp_path, "helen", workers=0, progress=False)
    assert report["passed_over"] == [str(tmp_path / "test" / "notes.txt")] and report["bad"] == []


# ---------------------------------------------------------------- 4. a moved root keeps the cache inside it
def test_a_moved_or_copied_root_keeps_its_cache(celeba, tmp_path):
    prepare_celebamask(celeba, workers=0, progress=False)
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(celeba, moved)
    ds = FaceParsingDataset(moved, "celebamask-hq", "train")
    assert ds.cache_dir == moved / "fpliif-cache" and len(ds) == 3 and ds[0]["mask"].shape == (32, 32)
    r = prepare_celebamask(moved, workers=0, progress=False)
    assert (r.built, r.reused) == (0, len(CELEBA_SPLIT))
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)  # copy2: sizes and mtimes kept
    assert FaceParsingDataset(copy, "celebamask-hq", "val").cache_dir == copy / "fpliif-cache"
    # strict about content all the same: a changed part is merged again, an altered mask is refused when read
    part = copy / "CelebAMask-HQ-mask-anno" / "0" / "00004_hat.png"
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(part)
    assert prepare_celebamask(copy, workers=0, progress=False).built == 1


def test_an_external_cache_stays_with_its_root_and_says_how_to_rebuild(celeba, tmp_path):
    cache = tmp_path / "ext"
    prepare_celebamask(celeba, cache=cache, workers=0, progress=False)
    moved = tmp_path / "moved"
    shutil.move(celeba, moved)
    with pytest.raises(FileNotFoundError, match=f"cache was built for {celeba}, not {moved}") as e:
        FaceParsingDataset(moved, "celebamask-hq", "train", cache=cache)
    assert f"fpliif data prepare --data {moved} --cache {cache}`" in str(e.value)
    r = prepare_celebamask(moved, cache=cache, workers=0, progress=False)  # the same parts: nothing merged again
    assert (r.built, r.reused) == (0, len(CELEBA_SPLIT))
    ds = FaceParsingDataset(moved, "celebamask-hq", "train", cache=cache)
    assert ds.cache_dir == cache
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(cache / "masks" / f"{ds.samples[0].name}.png")
    with pytest.raises(ValueError, match=f"run `fpliif data prepare --data {moved} --cache {cache}` to rebuild"):
        ds[0]


def test_an_absolute_manifest_inside_the_root_is_reused_and_upgraded(celeba, tmp_path):
    """A cache written before the manifest recorded the root relative to itself: prepare reuses its masks."""
    cache = prepare_celebamask(celeba, workers=0, progress=False).cache_dir
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["root"] = str(tmp_path / "old-place")
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match="cache was built for"):
        FaceParsingDataset(celeba, "celebamask-hq", "train")
    r = prepare_celebamask(celeba, workers=0, progress=False)
    assert (r.built, r.reused) == (0, len(CELEBA_SPLIT))
    assert json.loads((cache / "manifest.json").read_text())["root"] == ".."
    assert len(FaceParsingDataset(celeba, "celebamask-hq", "train")) == 3


# ---------------------------------------------------------------- 5. errors that name the folder meant
def test_a_parent_folder_or_a_split_folder_is_named_as_such(tmp_path):
    make_lapa(tmp_path / "LaPa")
    with pytest.raises(FileNotFoundError, match=r"looks like a parent folder of dataset roots: .*LaPa \(lapa\)"):
        detect_layout(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"the 'test' split folder of a lapa root: pass its parent, .*LaPa$"):
        detect_layout(tmp_path / "LaPa" / "test")
    with pytest.raises(FileNotFoundError, match="the 'test' split folder of a lapa root"):
        list_samples(tmp_path / "LaPa" / "test", "lapa", "test")  # --layout given: the same hint
    with pytest.raises(FileNotFoundError, match="cannot tell the layout"):  # nothing to point at
        detect_layout(tmp_path / "LaPa" / "test" / "landmarks")


def test_the_smithcvpr2013_helen_release_is_named_as_unsupported(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.jpg")
    (tmp_path / "images").mkdir()
    shutil.move(tmp_path / "x.jpg", tmp_path / "images" / "100_1.jpg")
    for k in range(11):
        p = tmp_path / "labels" / "100_1" / f"100_1_lbl{k:02d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(p)
    (tmp_path / "testing.txt").write_text("1 , 100_1\n")
    text = r"SmithCVPR2013 release of Helen .*which fpliif does not read: use the HELEN\* release"
    with pytest.raises(FileNotFoundError, match=text):
        detect_layout(tmp_path)
    with pytest.raises(FileNotFoundError, match=text):
        list_samples(tmp_path, "helen", "test")


def test_a_lapa_root_without_val_names_data_val_split(tmp_path):
    root = tmp_path / "LaPa"
    make_lapa(root, counts=(("train", 2), ("test", 2)))
    cfg = _train_cfg(tmp_path, f"data.root={root}", "data.layout=lapa", "model.args={classes: lapa}")
    with pytest.raises(FileNotFoundError) as e:
        check_run(cfg)
    assert str(e.value) == (
        f"data.val_split: {root} has no 'val' split: {root / 'val'} is missing (its splits: train, test); "
        "set data.val_split=null (no validation) or one of train, test"
    )
    cfg["data"]["val_split"] = None
    assert check_run(cfg).val_set is None
