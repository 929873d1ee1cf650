"""Datasets: layouts, splits, label sets, loader output, ``fpliif data check``/``prepare``, real mini data."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest
import torch

from fpliif.cli import main
from fpliif.data import (
    LAYOUTS,
    DataError,
    FaceParsingDataset,
    Sample,
    build_eval_transform,
    detect_layout,
    folder_split_of,
    label_set_for,
    list_samples,
)
from fpliif.labels import CELEBAMASK_HQ, HELEN, LAPA
from test_data_helpers import (
    COLOURS,
    make_folder,
    make_helen,
    make_lapa,
    mini_data_dir,
    save_image,
    save_mask,
)


def test_layouts_tuple():
    assert LAYOUTS == ("celebamask-hq", "lapa", "helen", "folder")


def _all_items(ds):
    return {item["name"]: item for item in (ds[i] for i in range(len(ds)))}


def test_folder_layout_returns_known_labels_and_pixels(tmp_path):
    masks = make_folder(tmp_path, n=5)
    ds = FaceParsingDataset(tmp_path, "folder", "all")
    assert ds.label_set is CELEBAMASK_HQ and len(ds) == 5
    items = _all_items(ds)
    for name, m in masks.items():
        item = items[name]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
        assert item["mask"].dtype == torch.int64 and item["mask"].shape == (32, 32)
        assert np.array_equal(item["mask"].numpy(), m)
        expected = COLOURS[m].astype(np.float32).transpose(2, 0, 1) / 255
        assert torch.allclose(item["image"], torch.from_numpy(expected), atol=1e-6)


def test_folder_split_is_hash_based_and_stable(tmp_path):
    make_folder(tmp_path, n=30)
    names = {s.name for s in list_samples(tmp_path, "folder", "all")}
    train = {s.name for s in list_samples(tmp_path, "folder", "train")}
    val = {s.name for s in list_samples(tmp_path, "folder", "val")}
    assert train | val == names and not train & val and val
    for n in names:  # the documented rule
        bucket = int(hashlib.sha1(n.encode()).hexdigest()[:8], 16) % 100
        assert (n in val) == (bucket < 10)
    # removing files does not move any other file between splits
    for p in sorted((tmp_path / "images").iterdir())[::2]:
        p.unlink()
        (tmp_path / "masks" / (p.stem + ".png")).unlink()
    val2 = {s.name for s in list_samples(tmp_path, "folder", "val")}
    assert val2 <= val and val2 == {n for n in val if (tmp_path / "images" / f"{n}.png").exists()}
    shares = [folder_split_of(f"img{i}") == "val" for i in range(4000)]
    assert 0.08 < np.mean(shares) < 0.12
    assert folder_split_of("x", val_percent=0) == "train" and folder_split_of("x", val_percent=100) == "val"


def test_folder_jpeg_images(tmp_path):
    masks = make_folder(tmp_path, n=2, ext=".jpg")
    ds = FaceParsingDataset(tmp_path, "folder", "all")
    item = ds[0]
    assert np.array_equal(item["mask"].numpy(), masks[item["name"]])


def test_folder_classes_txt_and_argument(tmp_path):
    make_folder(tmp_path, n=3, num_classes=3)
    (tmp_path / "classes.txt").write_text("# my classes\nbackground\nl_thing\nr_thing\n")
    ls = label_set_for("folder", tmp_path)
    assert ls.classes == ("background", "l_thing", "r_thing") and ls.flip_pairs == ((1, 2),)
    ds = FaceParsingDataset(tmp_path, "folder", "all")
    assert ds.label_set.num_classes == 3
    ds[0]
    assert label_set_for("folder", tmp_path, classes="lapa") is LAPA
    assert label_set_for("folder", None, classes=list(CELEBAMASK_HQ.classes)) is CELEBAMASK_HQ
    assert label_set_for("folder", None, classes=list(HELEN.classes)).classes == HELEN.classes
    assert label_set_for("folder", None, classes="a,b").classes == ("a", "b")
    assert label_set_for("folder", None) is CELEBAMASK_HQ
    with pytest.raises(KeyError):
        label_set_for("folder", None, classes="no-such-set")
    # two classes only: the masks' label 2 is now out of range
    (tmp_path / "classes.txt").write_text("background\nface\n")
    ds = FaceParsingDataset(tmp_path, "folder", "all")
    with pytest.raises(DataError, match="outside the 2 classes"):
        for i in range(len(ds)):
            ds[i]


def test_label_set_for_layouts():
    assert label_set_for("celebamask-hq") is CELEBAMASK_HQ
    assert label_set_for("lapa") is LAPA
    assert label_set_for("helen") is HELEN
    with pytest.raises(ValueError, match="unknown dataset layout"):
        label_set_for("cityscapes")


def test_lapa_layout(tmp_path):
    masks = make_lapa(tmp_path)
    assert [len(list_samples(tmp_path, "lapa", s)) for s in ("train", "val", "test", "all")] == [3, 2, 2, 7]
    ds = FaceParsingDataset(tmp_path, "lapa", "val")
    assert ds.label_set is LAPA
    for name, item in _all_items(ds).items():
        assert item["mask"].shape == (32, 40)
        assert np.array_equal(item["mask"].numpy(), masks[name])
    assert detect_layout(tmp_path) == "lapa"


def test_helen_layout_and_missing_val(tmp_path):
    masks = make_helen(tmp_path)
    samples = list_samples(tmp_path, "helen", "train")
    assert sorted(s.name for s in samples) == ["train0", "train1", "train2"]
    assert all(isinstance(s, Sample) and s.mask_path.name.endswith("_label.png") for s in samples)
    with pytest.raises(FileNotFoundError, match="no validation split"):
        list_samples(tmp_path, "helen", "val")
    assert len(list_samples(tmp_path, "helen", "all")) == 5
    ds = FaceParsingDataset(tmp_path, "helen", "test")
    assert ds.label_set is HELEN
    for name, item in _all_items(ds).items():
        assert np.array_equal(item["mask"].numpy(), masks[name])
    make_helen(tmp_path, splits=(("val", 1),))
    assert [s.name for s in list_samples(tmp_path, "helen", "val")] == ["val0"]
    assert detect_layout(tmp_path) == "helen"


def test_helen_in_lapa_layout_is_read_as_helen(tmp_path):
    """Helen saved as {train,test}/images + labels: ``auto`` says lapa (it cannot tell), ``helen`` reads it."""
    masks = make_lapa(tmp_path, counts=(("train", 2), ("test", 2)))
    assert detect_layout(tmp_path) == "lapa"
    assert sorted(s.name for s in list_samples(tmp_path, "helen", "test")) == ["test_0", "test_1"]
    ds = FaceParsingDataset(tmp_path, "helen", "test")
    assert ds.label_set is HELEN
    for name, item in _all_items(ds).items():
        assert np.array_equal(item["mask"].numpy(), masks[name])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "test").mkdir()
    with pytest.raises(DataError, match=r"no <name>_image.jpg files \(nor images/ and labels/ folders\)"):
        list_samples(tmp_path / "empty", "helen", "test")


def test_wrong_root_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_samples(tmp_path / "nope", "folder", "all")
    with pytest.raises(FileNotFoundError, match=r"does not look like a folder dataset root.*images"):
        list_samples(tmp_path, "folder", "all")
    with pytest.raises(FileNotFoundError, match="lapa"):
        list_samples(tmp_path, "lapa", "train")
    with pytest.raises(FileNotFoundError, match="CelebA-HQ-img"):
        list_samples(tmp_path, "celebamask-hq", "all")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no images"):
        list_samples(tmp_path, "folder", "all")
    with pytest.raises(ValueError, match="no split 'test'"):
        list_samples(tmp_path, "folder", "test")
    with pytest.raises(ValueError, match="unknown dataset layout"):
        list_samples(tmp_path, "voc", "train")
    with pytest.raises(FileNotFoundError, match="the images/ folder of a folder root: pass its parent"):
        detect_layout(tmp_path / "images")


def test_missing_mask_raises_or_is_skipped_with_a_count(tmp_path, caplog):
    make_folder(tmp_path, n=4)
    (tmp_path / "masks" / "face001.png").unlink()
    save_mask(tmp_path / "masks" / "orphan.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(DataError, match=r"face001\.png: no mask for this image.*1 more bad"):
        list_samples(tmp_path, "folder", "all")
    with caplog.at_level(logging.WARNING, logger="fpliif.data"):
        samples = list_samples(tmp_path, "folder", "all", skip_bad=True)
    assert sorted(s.name for s in samples) == ["face000", "face002", "face003"]
    assert "skipped 2 bad pair(s)" in caplog.text and "mask without an image" in caplog.text
    ds = FaceParsingDataset(tmp_path, "folder", "all", skip_bad=True)
    assert len(ds) == 3


def test_duplicate_image_names_are_bad(tmp_path):
    make_folder(tmp_path, n=2)
    save_image(tmp_path / "images" / "face000.jpg", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="several images share the name"):
        list_samples(tmp_path, "folder", "all")


def test_cli_data_check_folder(tmp_path, capsys):
    make_folder(tmp_path, n=6)
    assert main(["data", "check", "--data", str(tmp_path), "--layout", "folder", "--workers", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sum(report["splits"].values()) == 6 and report["samples"] == 6 and report["bad"] == []
    assert len(report["classes"]) == 19
    assert abs(sum(c["pixel_share"] for c in report["classes"]) - 100.0) < 1e-2
    assert max(c["images"] for c in report["classes"]) <= 6
    # a bad file: exit code 1 and the file listed with its reason; text output; auto layout detection
    (tmp_path / "images" / "face002.png").write_bytes(b"")
    assert main(["data", "check", "--data", str(tmp_path), "--workers", "1", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "face002.png: empty image file (0 bytes)" in out
    assert "layout   folder" in out and "skin" in out and "pixels %" in out


def test_cli_user_errors(tmp_path, capsys):
    assert main(["data", "check", "--data", str(tmp_path / "missing"), "--layout", "lapa"]) == 2
    assert "does not exist" in capsys.readouterr().err
    make_folder(tmp_path, n=2)
    assert main(["data", "prepare", "--data", str(tmp_path)]) == 0
    assert "nothing to prepare" in capsys.readouterr().out
    assert main(["data", "check", "--data", str(tmp_path), "--layout", "folder", "--split", "test"]) == 2
    assert "no split 'test'" in capsys.readouterr().err


def test_eval_transform_on_dataset(tmp_path):
    make_folder(tmp_path, n=2, size=32)
    ds = FaceParsingDataset(tmp_path, "folder", "all", transform=build_eval_transform(16, mask_sizes=(16, 32)))
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (16, 16)
    assert set(item["masks"]) == {16, 32}
    raw = FaceParsingDataset(tmp_path, "folder", "all")[0]["mask"]
    assert torch.equal(item["masks"][32], raw)


# ---------------------------------------------------------------- real data (skipped where absent)


@pytest.fixture(scope="module")
def mini_root():
    root = mini_data_dir()
    if not (root / "images").is_dir():
        pytest.skip(f"celebamask-mini not found at {root} (set FPLIIF_MINI_DATA)")
    return root


def test_real_mini_data_loads(mini_root):
    ds = FaceParsingDataset(mini_root, "folder", "val", transform=build_eval_transform(256, (256, 512)))
    assert ds.label_set is CELEBAMASK_HQ and 40 < len(ds) < 140
    right_half_l_eye = 0
    for i in range(4):
        item = ds[i]
        assert item["image"].shape == (3, 256, 256) and item["masks"][512].shape == (512, 512)
        assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
        m = item["masks"][512]
        assert int(m.max()) < 19
        assert (m == 1).any()  # every face has skin
        xs_l, xs_r = torch.nonzero(m == 4)[:, 1], torch.nonzero(m == 5)[:, 1]
        if len(xs_l) and len(xs_r):
            right_half_l_eye += int(xs_l.float().mean() > xs_r.float().mean())
    # README: l_eye is the subject's left eye, on the image's right half
    assert right_half_l_eye >= 2
    train = list_samples(mini_root, "folder", "train")
    assert len(train) + len(ds) == len(list_samples(mini_root, "folder", "all"))


# ------------------------------------------------------------------------------------------------ several roots
def test_several_roots_are_one_dataset_with_each_roots_own_split(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_folder(a, n=30)
    masks_b = make_folder(b, n=3)
    for name in list(masks_b):  # distinct stems in b, so the two roots' splits are distinguishable
        for sub, ext in (("images", ".png"), ("masks", ".png")):
            (b / sub / f"{name}{ext}").rename(b / sub / f"b_{name}{ext}")
    for split in ("train", "val"):
        alone = [s.image_path for s in FaceParsingDataset(a, "folder", split).samples]
        both = FaceParsingDataset([a, b], "folder", split)
        assert [s.image_path for s in both.samples][: len(alone)] == alone  # a's split does not move
        assert all(folder_split_of(s.name) == split for s in both.samples)
        assert both.roots == [a, b] and both.root == a
    total = len(FaceParsingDataset([a, b], "folder", "all"))
    assert total == 33
    item = FaceParsingDataset([str(a), str(b)], "folder", "all")[32]
    assert item["name"].startswith("b_") and item["image"].shape == (3, 32, 32)


def test_several_roots_errors(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_folder(a, n=4)
    make_folder(b, n=4)
    with pytest.raises(ValueError, match="given twice"):
        FaceParsingDataset([a, a], "folder", "all")
    with pytest.raises(ValueError, match="non-empty list"):
        FaceParsingDataset([], "folder", "all")
    with pytest.raises(FileNotFoundError, match="missing"):
        FaceParsingDataset([a, tmp_path / "missing"], "folder", "all")
    (b / "classes.txt").write_text("background\nskin\n")
    with pytest.raises(DataError, match="classes differ"):
        FaceParsingDataset([a, b], "folder", "all")


def test_cli_data_check_several_roots(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    make_folder(a, n=5)
    make_folder(b, n=3)
    assert main(["data", "check", "--data", str(a), "--data", str(b), "--workers", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["root"] == [str(a), str(b)] and report["samples"] == 8 and report["checked_ok"] == 8
    assert [sum(r["splits"].values()) for r in report["per_root"]] == [5, 3]
    assert sum(report["splits"].values()) == 8
    (b / "images" / "face001.png").write_bytes(b"")
    assert main(["data", "check", "--data", str(a), "--data", str(b), "--workers", "0", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert f"root     {a}" in out and f"root     {b}" in out and "face001.png: empty image file" in out
    make_lapa(tmp_path / "lapa")
    assert main(["data", "check", "--data", str(a), "--data", str(tmp_path / "lapa")]) == 2
    assert "different layouts" in capsys.readouterr().err


def test_preload_gives_identical_transformed_samples(tmp_path):
    from fpliif.data import build_train_transform

    make_folder(tmp_path, n=5, size=40)
    (tmp_path / "images" / "face003.png").write_bytes(b"")  # a bad pair stays bad after preloading
    aug = {"rotation": 10.0, "scale": [0.9, 1.1], "crop": 2, "color_jitter": {"brightness": [0.8, 1.2]}, "hflip": True}
    tf = build_train_transform(size=24, augment=aug, label_set=CELEBAMASK_HQ)
    disk = FaceParsingDataset(tmp_path, "folder", "all", transform=tf, skip_bad=True)
    mem = FaceParsingDataset(tmp_path, "folder", "all", transform=tf, skip_bad=True)
    mem.preload(24, workers=1)
    for i in range(len(disk)):
        torch.manual_seed(i)
        a = disk[i]
        torch.manual_seed(i)
        b = mem[i]
        assert a["name"] == b["name"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert mem.num_skipped == disk.num_skipped == 1
    strict = FaceParsingDataset(tmp_path, "folder", "all")
    strict.preload(24)
    with pytest.raises(DataError, match="face003.png"):
        strict[3]
