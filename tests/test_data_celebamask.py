"""CelebAMask-HQ: part merging (later class wins), the official split rule, the merged-mask cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fpliif.cli import main
from fpliif.data import (
    DataError,
    FaceParsingDataset,
    celebamask_split_of,
    detect_layout,
    list_samples,
    prepare_celebamask,
)
from fpliif.data import celebamask as cm
from fpliif.data.dataset import load_sample
from fpliif.labels import CELEBAMASK_HQ
from test_data_helpers import CELEBA_SPLIT, celeba_expected, make_celebamask


@pytest.fixture
def celeba(tmp_path):
    root = tmp_path / "CelebAMask-HQ"
    expected = make_celebamask(root)
    return root, expected


def test_split_rule_boundaries():
    assert celebamask_split_of(0) == "train"
    # orig_idx 162770 = CelebA file 162771.jpg, the first of CelebA's val: train, as g_partition.py has it
    assert celebamask_split_of(162770) == "train"
    assert celebamask_split_of(162771) == "val"
    assert celebamask_split_of(182637) == "val"
    assert celebamask_split_of(182638) == "test"


def test_list_samples_per_split(celeba):
    root, _ = celeba
    for split in ("train", "val", "test"):
        got = sorted(s.name for s in list_samples(root, "celebamask-hq", split))
        assert got == sorted(str(i) for i, s in CELEBA_SPLIT.items() if s == split), split
    all_ = list_samples(root, "celebamask-hq", "all")
    assert len(all_) == len(CELEBA_SPLIT)
    s2001 = next(s for s in all_ if s.name == "2001")
    assert all(p.parent.name == "1" for _, p in s2001.parts)  # k = id // 2000
    assert [c for c, _ in s2001.parts] == sorted(c for c, _ in s2001.parts)
    assert detect_layout(root) == "celebamask-hq"


def test_mapping_missing_or_image_without_parts(celeba):
    root, _ = celeba
    for p in (root / "CelebAMask-HQ-mask-anno" / "0").glob("00003_*.png"):
        p.unlink()
    with pytest.raises(DataError, match=r"3\.jpg: no mask parts"):
        list_samples(root, "celebamask-hq", "val")
    assert [s.name for s in list_samples(root, "celebamask-hq", "val", skip_bad=True)] == ["2"]
    (root / "CelebA-HQ-to-CelebA-mapping.txt").unlink()
    with pytest.raises(FileNotFoundError, match="CelebA-HQ-to-CelebA-mapping.txt is missing"):
        list_samples(root, "celebamask-hq", "train")
    assert len(list_samples(root, "celebamask-hq", "all", skip_bad=True)) == len(CELEBA_SPLIT) - 1


def test_an_image_smaller_than_its_parts_is_named_with_the_parts_file_names(celeba):
    root, _ = celeba
    Image.new("RGB", (16, 16)).save(root / "CelebA-HQ-img" / "2.jpg")  # its parts are 32²
    (sample,) = [s for s in list_samples(root, "celebamask-hq", "val") if s.name == "2"]
    with pytest.raises(DataError, match=r"2\.jpg: image is 16x16 but its mask .*/0/00002_\*\.png is 32x32"):
        load_sample(sample, CELEBAMASK_HQ.num_classes)


def test_dataset_needs_prepare_then_loads_merged_masks(celeba, tmp_path):
    root, expected = celeba
    with pytest.raises(FileNotFoundError, match="fpliif data prepare"):
        FaceParsingDataset(root, "celebamask-hq", "train")
    result = prepare_celebamask(root, workers=0, progress=False)
    assert result.cache_dir == root / "fpliif-cache"  # the root is writable
    assert (result.built, result.reused, result.bad) == (len(CELEBA_SPLIT), 0, [])
    manifest = json.loads((result.cache_dir / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["version"] == cm.CACHE_VERSION
    assert list(manifest)[-1] == "complete"
    ds = FaceParsingDataset(root, "celebamask-hq", "train")
    assert ds.label_set is CELEBAMASK_HQ and sorted(s.name for s in ds.samples) == ["0", "1", "2001"]
    for i in range(len(ds)):
        item = ds[i]
        assert np.array_equal(item["mask"].numpy(), expected[item["name"]])
        assert item["image"].shape == (3, 32, 32)  # the 64² image is downscaled to its 32² mask
    # overlaps: hair over skin, cloth over hair (later class wins); missing l_eye on odd ids
    m = expected["1"]
    idx = CELEBAMASK_HQ.index
    assert m[5, 5] == idx("hair") and m[11, 5] == idx("cloth") and m[20, 5] == idx("skin")
    assert m[16, 15] == idx("nose") and (m != idx("l_eye")).all() and (expected["0"] == idx("l_eye")).any()
    # merging on the fly gives the same
    ds2 = FaceParsingDataset(root, "celebamask-hq", "train", cache=False)
    assert np.array_equal(ds2[0]["mask"].numpy(), ds[0]["mask"].numpy())


def test_merged_file_is_an_index_png(celeba):
    root, expected = celeba
    cache = prepare_celebamask(root, workers=0, progress=False).cache_dir
    img = Image.open(cache / "masks" / "4.png")
    assert img.mode == "P" and np.array_equal(np.asarray(img), expected["4"])


def test_interrupted_cache_is_not_trusted_and_rebuilt(celeba):
    root, _ = celeba
    cache = prepare_celebamask(root, workers=0, progress=False).cache_dir
    manifest = json.loads((cache / "manifest.json").read_text())
    # an interrupted run: manifest without the complete marker
    manifest["complete"] = False
    (cache / "manifest.json").write_text(json.dumps(manifest))
    (cache / "masks" / "0.png").write_bytes(b"half a png")
    with pytest.raises(FileNotFoundError, match="incomplete cache"):
        FaceParsingDataset(root, "celebamask-hq", "train")
    r = prepare_celebamask(root, workers=0, progress=False)
    assert r.built == len(CELEBA_SPLIT) and r.reused == 0
    FaceParsingDataset(root, "celebamask-hq", "train")[0]
    # an interrupted run: no manifest at all
    (cache / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="no manifest"):
        FaceParsingDataset(root, "celebamask-hq", "test")
    assert prepare_celebamask(root, workers=0, progress=False).built == len(CELEBA_SPLIT)


def test_corrupted_cache_file_detected_and_rebuilt(celeba):
    root, expected = celeba
    cache = prepare_celebamask(root, workers=0, progress=False).cache_dir
    # replace a cached mask by another valid PNG of the same size: only the hash can tell
    bogus = Image.fromarray(np.zeros((32, 32), np.uint8))
    bogus.save(cache / "masks" / "2.png")
    ds = FaceParsingDataset(root, "celebamask-hq", "val")
    i = [s.name for s in ds.samples].index("2")
    with pytest.raises(DataError, match=r"2\.png: cached mask does not match its manifest hash.*data prepare"):
        ds[i]
    r = prepare_celebamask(root, workers=0, progress=False)
    assert (r.built, r.reused) == (1, len(CELEBA_SPLIT) - 1)
    assert np.array_equal(FaceParsingDataset(root, "celebamask-hq", "val")[i]["mask"].numpy(), expected["2"])
    # nothing changed: everything is reused and the manifest is kept
    assert prepare_celebamask(root, workers=0, progress=False).built == 0


def test_changed_source_part_is_rebuilt(celeba):
    root, _ = celeba
    prepare_celebamask(root, workers=0, progress=False)
    part = root / "CelebAMask-HQ-mask-anno" / "0" / "00004_hat.png"
    hat = np.zeros((32, 32), np.uint8)
    hat[0:3, 0:3] = 255
    Image.fromarray(hat).save(part)
    r = prepare_celebamask(root, workers=0, progress=False)
    assert r.built == 1
    ds = FaceParsingDataset(root, "celebamask-hq", "test")
    assert ds[0]["mask"][1, 1] == CELEBAMASK_HQ.index("hat")


def test_corrupt_part_png_reported(celeba):
    root, _ = celeba
    (root / "CelebAMask-HQ-mask-anno" / "0" / "00001_nose.png").write_bytes(b"garbage")
    r = prepare_celebamask(root, workers=0, progress=False)
    assert len(r.bad) == 1 and r.bad[0][0].endswith("00001_nose.png") and "cannot decode" in r.bad[0][1]
    with pytest.raises(DataError, match="00001_nose.png"):
        FaceParsingDataset(root, "celebamask-hq", "train")
    assert len(FaceParsingDataset(root, "celebamask-hq", "train", skip_bad=True)) == 2
    assert main(["data", "prepare", "--data", str(root), "--no-progress"]) == 1
    assert main(["data", "prepare", "--data", str(root), "--no-progress", "--skip-bad"]) == 0


def test_unwritable_root_uses_user_cache_dir(celeba, tmp_path, monkeypatch):
    root, _ = celeba
    monkeypatch.setenv("FPLIIF_CACHE_DIR", str(tmp_path / "user-cache"))
    real = cm._writable_dir
    monkeypatch.setattr(cm, "_writable_dir", lambda p: False if p == root / "fpliif-cache" else real(p))
    r = prepare_celebamask(root, workers=0, progress=False)
    assert r.cache_dir.parent == tmp_path / "user-cache" and r.cache_dir.name.startswith("celebamask-hq-")
    assert FaceParsingDataset(root, "celebamask-hq", "val").cache_dir == r.cache_dir


def test_auto_prepare(celeba):
    root, expected = celeba
    ds = FaceParsingDataset(root, "celebamask-hq", "test", auto_prepare=True)
    assert np.array_equal(ds[0]["mask"].numpy(), expected["4"])


def test_cli_prepare_and_check(celeba, tmp_path, capsys):
    root, _ = celeba
    cache = tmp_path / "my-cache"
    assert main(["data", "prepare", "--data", str(root), "--cache", str(cache), "--workers", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert str(cache) in out and f"{len(CELEBA_SPLIT)} merged" in out
    assert (cache / "manifest.json").is_file() and not (root / "fpliif-cache").exists()
    assert main(["data", "prepare", "--data", str(root), "--cache", str(cache), "--no-progress"]) == 0
    assert "0 merged" in capsys.readouterr().out
    argv = ["data", "check", "--data", str(root), "--layout", "celebamask-hq", "--cache", str(cache), "--json"]
    assert main([*argv, "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["splits"] == {"train": 3, "val": 2, "test": 1}
    assert "cache" in report["masks_from"] and report["bad"] == []
    shares = {c["name"]: c for c in report["classes"]}
    assert shares["hair"]["images"] == 6 and shares["l_eye"]["images"] == 3 and shares["hat"]["images"] == 0
    # without a cache the check merges the parts itself
    assert main(["data", "check", "--data", str(root), "--layout", "celebamask-hq", "--json", "--no-progress"]) == 0
    assert "on the fly" in json.loads(capsys.readouterr().out)["masks_from"]
    # expected merged map sanity: the checker's pixel shares match the fixture's
    exp = np.stack([celeba_expected(i) for i in CELEBA_SPLIT])
    assert shares["skin"]["pixel_share"] == pytest.approx(100 * (exp == 1).mean(), abs=1e-3)
