"""Bad and odd input files: each is handled correctly or raises one clear DataError naming the file."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fpliif.data import DataError, FaceParsingDataset, make_loader
from fpliif.data.io import read_image, read_mask
from test_data_helpers import block_mask, make_folder, save_image, save_mask


def _ds(root, **kw):
    return FaceParsingDataset(root, "folder", "all", **kw)


def _item(root, name, **kw):
    ds = _ds(root, **kw)
    idx = [s.name for s in ds.samples].index(name)
    return ds[idx]


@pytest.fixture
def folder(tmp_path):
    make_folder(tmp_path, n=3, size=32)
    return tmp_path


def test_mask_size_differs_from_image(folder):
    save_mask(folder / "masks" / "face001.png", np.zeros((32, 40), np.uint8))
    with pytest.raises(DataError, match=r"face001\.png: image is 32x32 but its mask .*face001\.png is 40x32"):
        _item(folder, "face001")


def test_label_values_out_of_range(folder):
    m = np.zeros((32, 32), np.uint8)
    m[0, 0], m[1, 1], m[2, 2] = 19, 200, 255  # 255 = ignore is fine
    save_mask(folder / "masks" / "face000.png", m)
    with pytest.raises(DataError, match=r"face000\.png: mask holds label values \[19, 200\] outside the 19"):
        _item(folder, "face000")
    m[0, 0] = m[1, 1] = 18
    save_mask(folder / "masks" / "face000.png", m)
    assert int(_item(folder, "face000")["mask"][2, 2]) == 255


@pytest.mark.parametrize("kind", ["truncated-jpeg", "truncated-png", "garbage", "empty"])
def test_corrupt_image_files(folder, kind):
    p = folder / "images" / "face002.png"
    if kind == "truncated-jpeg":
        p.unlink()
        p = folder / "images" / "face002.jpg"
        save_image(p, np.random.default_rng(0).integers(0, 255, (32, 32, 3)), quality=90)
        p.write_bytes(p.read_bytes()[:300])
    elif kind == "truncated-png":
        p.write_bytes(p.read_bytes()[:-40])
    elif kind == "garbage":
        p.write_bytes(b"this is not an image at all" * 10)
    else:
        p.write_bytes(b"")
    msg = {"empty": "empty image file \\(0 bytes\\)", "garbage": "cannot decode image: not a readable image \\(no"}
    with pytest.raises(DataError, match=f"{p.name}: {msg.get(kind, 'cannot decode image')}") as e:
        _item(folder, "face002")
    assert e.value.path == str(p)
    assert "BytesIO" not in str(e.value)  # before: "cannot identify image file <_io.BytesIO object at 0x...>"


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage"])
def test_corrupt_mask_files(folder, kind):
    p = folder / "masks" / "face001.png"
    data = p.read_bytes()
    p.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"\x89PNG broken" * 5}[kind])
    with pytest.raises(DataError, match=r"face001\.png: (cannot decode mask|empty mask file)") as e:
        _item(folder, "face001")
    assert "BytesIO" not in str(e.value)


def test_skip_bad_in_getitem_skips_with_warning_and_count(folder, caplog):
    (folder / "images" / "face001.png").write_bytes(b"broken")
    ds = _ds(folder)
    with pytest.raises(DataError, match="face001"):
        ds[1]
    ds = _ds(folder, skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="fpliif.data"):
        item = ds[1]
    assert item["name"] == "face002" and ds.num_skipped == 1
    assert "skipping bad pair" in caplog.text and "face001" in caplog.text
    assert ds.skipped[0][0].endswith("face001.png")


def test_error_crosses_dataloader_workers(folder):
    (folder / "masks" / "face000.png").write_bytes(b"")
    loader = make_loader(_ds(folder), batch_size=3, shuffle=False, num_workers=1)
    with pytest.raises(DataError, match="face000.png"):
        next(iter(loader))


# ---------------------------------------------------------------- image modes


def _roundtrip_image(tmp_path, img: Image.Image, name="x.png") -> torch.Tensor:
    p = tmp_path / name
    img.save(p)
    return read_image(p)


def test_grayscale_image_becomes_rgb(tmp_path):
    g = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    t = _roundtrip_image(tmp_path, Image.fromarray(g))
    assert t.shape == (3, 8, 8) and t.dtype == torch.float32
    assert torch.allclose(t[0], torch.from_numpy(g / 255.0).float()) and torch.equal(t[0], t[2])


def test_rgba_image_composited_over_white(tmp_path):
    """One rule with the parser and the service (fpliif.imaging): transparency over white."""
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[0, :, 3] = 255
    rgba[1, :, 3] = 0
    rgba[2, :, 3] = 128
    rgba[3, :, 3] = 255
    t = _roundtrip_image(tmp_path, Image.fromarray(rgba, "RGBA"))
    assert torch.allclose(t[:, 0, 0], torch.tensor([200, 100, 50]) / 255.0)
    assert torch.equal(t[:, 1, 0], torch.ones(3))
    half = (torch.tensor([200, 100, 50]) * 128 + 255 * 127) / 255 / 255.0
    assert torch.allclose(t[:, 2, 0], half, atol=1.5 / 255)
    la = Image.fromarray(rgba[..., 3]).convert("LA")
    assert _roundtrip_image(tmp_path, la, "la.png").shape == (3, 4, 4)


def test_cmyk_jpeg_image(tmp_path):
    p = tmp_path / "c.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(p, quality=100)  # pure red in CMYK
    assert Image.open(p).mode == "CMYK"
    t = read_image(p)
    assert t.shape == (3, 8, 8)
    assert t[0].mean() > 0.9 and t[1].mean() < 0.1 and t[2].mean() < 0.1


def test_16bit_images_scaled(tmp_path):
    g = np.array([[0, 32768], [65535, 257]], dtype=np.uint16)
    p = tmp_path / "g16.png"
    cv2.imwrite(str(p), g)
    assert Image.open(p).mode.startswith("I")
    t = read_image(p)  # scaled by the bit depth to 8 bits (the one rule of fpliif.imaging), then / 255
    assert torch.equal(t[0], torch.tensor([[0.0, 128 / 255], [1.0, 1 / 255]]))
    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[..., 2] = 65535  # BGR for cv2: red channel full
    rgb16[..., 1] = 32896  # 0x8080: green half
    p = tmp_path / "rgb16.png"
    cv2.imwrite(str(p), rgb16)
    t = read_image(p)
    assert torch.allclose(t[:, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]), atol=1e-6)


def test_palette_image_uses_palette_colours(tmp_path):
    img = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8))
    img.putpalette([10, 20, 30, 250, 240, 230] + [0] * 762)
    t = _roundtrip_image(tmp_path, img)
    assert torch.allclose(t[:, 0, 1], torch.tensor([250, 240, 230]) / 255.0)


# ---------------------------------------------------------------- mask modes


def test_16bit_mask_values_are_indices(tmp_path):
    p = tmp_path / "m16.png"
    cv2.imwrite(str(p), np.array([[0, 3], [18, 255]], dtype=np.uint16))
    assert read_mask(p, 19).tolist() == [[0, 3], [18, 255]]
    cv2.imwrite(str(p), np.array([[0, 300], [1, 2]], dtype=np.uint16))
    with pytest.raises(DataError, match=r"m16\.png: mask values \[300\] are not class indices"):
        read_mask(p, 19)


def test_rgb_mask_equal_channels_ok_colour_mask_rejected(tmp_path):
    m = np.array([[0, 5], [7, 1]], np.uint8)
    p = tmp_path / "rgb.png"
    Image.fromarray(np.repeat(m[..., None], 3, 2)).save(p)
    assert np.array_equal(read_mask(p, 19), m)
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (204, 0, 0)
    Image.fromarray(colour).save(p)
    with pytest.raises(DataError, match=r"rgb\.png: mask is a colour \(RGB\) image whose channels differ"):
        read_mask(p, 19)


def test_palette_mask_uses_indices_not_colours(tmp_path):
    m = np.array([[0, 1], [2, 3]], np.uint8)
    img = Image.fromarray(m)
    img.putpalette([255, 255, 255] * 256)  # every colour white: only the indices carry the labels
    p = tmp_path / "p.png"
    img.save(p)
    assert Image.open(p).mode == "P"
    assert np.array_equal(read_mask(p, 19), m)


# ---------------------------------------------------------------- EXIF orientation


def _exif_jpeg(path, rgb: np.ndarray, orientation: int) -> None:
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, quality=100, exif=exif.tobytes())


def test_exif_rotated_jpeg(tmp_path):
    (tmp_path / "images").mkdir()
    # stored 48 wide x 32 high, left half red; orientation 6 = display rotated 90 deg clockwise -> 32 x 48
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:, :24] = (255, 0, 0)
    _exif_jpeg(tmp_path / "images" / "r.jpg", stored, 6)
    mask = np.zeros((48, 32), np.uint8)  # displayed size: 32 wide, 48 high
    mask[:24] = 1  # after rotating clockwise, the stored left half is the displayed top half
    save_mask(tmp_path / "masks" / "r.png", mask)
    item = _ds(tmp_path)[0]
    assert item["image"].shape == (3, 48, 32)
    assert item["image"][0, :20].mean() > 0.9 and item["image"][0, 28:].mean() < 0.1
    assert torch.equal(item["mask"], torch.from_numpy(mask).long())  # mask is not rotated
    # a mask drawn on the stored (un-rotated) pixels no longer fits: clear error naming the EXIF orientation
    save_mask(tmp_path / "masks" / "r.png", np.zeros((32, 48), np.uint8))
    with pytest.raises(DataError, match=r"r\.jpg: image is 32x48 but its mask .* 48x32 .*EXIF orientation 6"):
        _ds(tmp_path)[0]


def test_exif_on_mask_is_ignored(tmp_path):
    m = block_mask(16, 24, 5, seed=3)
    p = tmp_path / "m.png"
    img = Image.fromarray(m)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(p, exif=exif.tobytes())
    assert np.array_equal(read_mask(p, 19), m)
