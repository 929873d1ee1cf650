"""One image decoder (fpliif.imaging.to_rgb) for training data, the parser and the service: generated files of
every kind decode to the same uint8 RGB pixels through ``read_image`` (data), ``load_image`` (parser) and
``POST /v1/parse`` (service)."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fpliif.data.io import read_image
from fpliif.imaging import to_rgb
from fpliif.infer.images import load_image


def _save(path, img: Image.Image, **kw):
    img.save(path, **kw)
    return path


def _data_pixels(path) -> np.ndarray:
    """What training sees, back in uint8 (read_image gives uint8 / 255 as float32)."""
    t = read_image(path)
    u8 = (t * 255).round().to(torch.uint8)
    assert torch.allclose(u8.float() / 255, t, atol=0, rtol=0), "read_image is not uint8 / 255"
    return u8.permute(1, 2, 0).numpy()


def _assert_one_rule(path, expected: np.ndarray) -> None:
    """Data loading, the parser and to_rgb itself all give ``expected`` (uint8 (H, W, 3))."""
    parsed = load_image(path)
    assert parsed.dtype == np.uint8 and parsed.shape == expected.shape
    np.testing.assert_array_equal(parsed, expected)
    np.testing.assert_array_equal(_data_pixels(path), expected)
    with Image.open(path) as img:
        img.load()
        np.testing.assert_array_equal(to_rgb(img), expected)


def test_float_tiff_in_unit_range_scaled_and_clipped(tmp_path):
    f = np.linspace(0, 1, 6 * 8, dtype=np.float32).reshape(6, 8)
    f[0, 0], f[0, 1], f[0, 2] = -0.5, 1.5, np.nan  # clipped; NaN -> 0
    p = _save(tmp_path / "f.tif", Image.fromarray(f, mode="F"))
    assert Image.open(p).mode == "F"
    gray = np.rint(np.clip(np.nan_to_num(f), 0, 1) * 255).astype(np.uint8)
    assert gray[0, :3].tolist() == [0, 255, 0]
    _assert_one_rule(p, np.repeat(gray[..., None], 3, axis=2))


def test_16bit_png_scaled_by_bit_depth_not_by_content(tmp_path):
    # values that all fit in 8 bits are still 16-bit samples: 255 / 65535 of full scale is nearly black
    g = np.array([[0, 128, 255], [257, 32768, 65535]], dtype=np.uint16)
    p = tmp_path / "g16.png"
    cv2.imwrite(str(p), g)
    assert Image.open(p).mode.startswith("I")
    gray = np.array([[0, 0, 1], [1, 128, 255]], np.uint8)  # round(v * 255 / 65535)
    _assert_one_rule(p, np.repeat(gray[..., None], 3, axis=2))
    dim = np.array([[0, 100], [200, 255]], dtype=np.uint16)
    cv2.imwrite(str(p), dim)
    assert load_image(p).max() <= 1


def _grey3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)


def test_mode_i_of_unknown_depth_is_read_by_its_values_with_a_warning(caplog):
    """Before: a mode ``I`` image made in memory holding 8-bit values was scaled from 16 bits (nearly black)."""
    from fpliif.infer.images import as_images

    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for img in (Image.fromarray(u8.astype(np.int32), "I"), Image.fromarray(u8).convert("I")):
        with caplog.at_level("WARNING", logger="fpliif.imaging"):
            np.testing.assert_array_equal(to_rgb(img), _grey3(u8))
        assert "image: mode I image of unknown bit depth, values up to 255: read as 8-bit" in caplog.text
        caplog.clear()
    deep = np.array([[0, 256], [32768, 65535]], np.int32)  # beyond 8 bits: 16-bit values
    with caplog.at_level("WARNING", logger="fpliif.imaging"):
        [(rgb, _)], _ = as_images([Image.fromarray(deep, "I")])
    np.testing.assert_array_equal(rgb, _grey3(np.array([[0, 1], [128, 255]])))
    assert "image[0]: mode I image of unknown bit depth, values up to 65535: read as 16-bit" in caplog.text
    wide = np.array([[0, 1 << 24], [2**31 - 1, 70000]], np.int32)  # beyond 16 bits: 32
    np.testing.assert_array_equal(
        to_rgb(Image.fromarray(wide, "I")), _grey3(np.rint(wide.astype(np.float64) * 255 / (2**32 - 1)))
    )


def test_mode_i_files_are_scaled_by_the_depth_they_record(tmp_path, caplog):
    """PNG (older Pillow opens 16-bit grey as ``I``; also EXIF-rotated) and PGM: 16 bits; TIFF: its BitsPerSample
    (32 here); no guessing, no warning."""
    low = np.array([[0, 255], [128, 7]], np.uint16)
    png = tmp_path / "g16.png"
    cv2.imwrite(str(png), low)
    with Image.open(png) as img:
        img.load()
        old_pillow, turned = img.convert("I"), img.convert("I")
    old_pillow.format = turned.format = "PNG"  # how older Pillow holds a 16-bit grey PNG
    with caplog.at_level("WARNING", logger="fpliif.imaging"):
        dark = to_rgb(old_pillow)
    np.testing.assert_array_equal(dark, _grey3(np.array([[0, 1], [0, 0]])))  # 8-bit values in a 16-bit file
    pgm = tmp_path / "g.pgm"
    pgm.write_bytes(b"P5\n2 2\n65535\n" + low.astype(">u2").tobytes())
    with Image.open(pgm) as img:
        assert img.mode == "I"
    _assert_one_rule(pgm, _grey3(np.array([[0, 1], [0, 0]])))
    wide = np.array([[0, 255], [2**31 - 1, 1 << 24]], np.int32)
    tif = _save(tmp_path / "i32.tif", Image.fromarray(wide, "I"))
    _assert_one_rule(tif, _grey3(np.rint(wide.astype(np.float64) * 255 / (2**32 - 1))))
    turned.getexif()[0x0112] = 6  # EXIF orientation: Pillow's rotated copy has no format; the file's depth holds
    with caplog.at_level("WARNING", logger="fpliif.imaging"):
        np.testing.assert_array_equal(to_rgb(turned), np.rot90(dark, -1))
    assert "unknown bit depth" not in caplog.text


def test_16bit_rgb_png_high_byte(tmp_path):
    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[..., 2] = 65535  # BGR for cv2: red full
    rgb16[..., 1] = 32896  # 0x8080: green half
    p = tmp_path / "rgb16.png"
    cv2.imwrite(str(p), rgb16)
    _assert_one_rule(p, np.broadcast_to(np.array([255, 128, 0], np.uint8), (2, 2, 3)).copy())


def _over_white(rgb: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Reference compositing over white (within Pillow's integer rounding, checked with atol=1)."""
    a = a[..., None].astype(np.float64) / 255
    return np.rint(rgb * a + 255 * (1 - a)).astype(np.uint8)


def test_rgba_composited_over_white_in_data_and_parser_alike(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :, 3] = np.array([255, 0, 128, 255], np.uint8)[:, None]
    p = _save(tmp_path / "rgba.png", Image.fromarray(rgba, "RGBA"))
    expected = load_image(p)
    assert expected[0, 0].tolist() == [200, 100, 50]  # opaque: as stored
    assert expected[1, 0].tolist() == [255, 255, 255]  # fully transparent: white, not the hidden colour
    assert np.abs(expected.astype(int) - _over_white(rgba[..., :3], rgba[..., 3])).max() <= 1
    _assert_one_rule(p, expected)


def test_la_and_palette_transparency_over_white(tmp_path):
    la = np.stack([np.full((3, 3), 40, np.uint8), np.array([[255, 0, 255]] * 3, np.uint8)], -1)
    p = _save(tmp_path / "la.png", Image.fromarray(la, "LA"))
    expected = np.repeat(np.array([[40, 255, 40]] * 3, np.uint8)[..., None], 3, axis=2)
    _assert_one_rule(p, expected)

    idx = np.array([[0, 1], [1, 0]], np.uint8)
    pal = Image.fromarray(idx, "P")
    pal.putpalette([10, 20, 30, 250, 240, 230] + [0] * 762)
    p = _save(tmp_path / "p.png", pal, transparency=0)
    assert "transparency" in Image.open(p).info
    expected = np.array([[[255] * 3, [250, 240, 230]], [[250, 240, 230], [255] * 3]], np.uint8)
    _assert_one_rule(p, expected)


def test_palette_grayscale_and_cmyk(tmp_path):
    idx = np.array([[0, 1], [1, 0]], np.uint8)
    pal = Image.fromarray(idx, "P")
    pal.putpalette([10, 20, 30, 250, 240, 230] + [0] * 762)
    p = _save(tmp_path / "p.png", pal)
    _assert_one_rule(p, np.array([[[10, 20, 30], [250, 240, 230]], [[250, 240, 230], [10, 20, 30]]], np.uint8))

    g = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).astype(np.uint8)
    p = _save(tmp_path / "g.png", Image.fromarray(g))
    _assert_one_rule(p, np.repeat(g[..., None], 3, axis=2))

    p = _save(tmp_path / "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), quality=100)  # red in CMYK
    assert Image.open(p).mode == "CMYK"
    expected = load_image(p)
    assert expected[..., 0].min() > 230 and expected[..., 1:].max() < 25
    _assert_one_rule(p, expected)


def test_exif_orientation_applied_alike(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = _save(tmp_path / "rot.jpg", Image.fromarray(rgb), exif=exif, quality=95)
    expected = np.asarray(Image.open(p).convert("RGB").transpose(Image.Transpose.ROTATE_270))
    assert expected.shape == (40, 30, 3)
    _assert_one_rule(p, expected)


def test_rgb_jpeg_pixels_unchanged_for_training(tmp_path):
    """CelebAMask-HQ's RGB JPEGs: exactly the stored pixels / 255, also on the 1024² -> 512² path."""
    rng = np.random.default_rng(1)
    p = _save(tmp_path / "x.jpg", Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), quality=90)
    stored = np.asarray(Image.open(p))
    assert torch.equal(read_image(p), torch.from_numpy(stored.transpose(2, 0, 1).copy()).float() / 255)
    with Image.open(p) as img:  # what read_image did before the shared decoder, for allow_scale
        img.draft("RGB", (32, 32))
        small = np.asarray(img.resize((32, 32), Image.BICUBIC) if img.size != (32, 32) else img)
    got = read_image(p, expect_size=(32, 32), allow_scale=True)
    assert torch.equal(got, torch.from_numpy(small.transpose(2, 0, 1).copy()).float() / 255)


def test_service_decodes_a_float_tiff(tmp_path):
    """Issue 16: a float TIFF in [0, 1] was a plain-text 500; it is an image like any other."""
    pytest.importorskip("fastapi")
    pytest.importorskip("python_multipart")
    pytest.importorskip("httpx")
    import fpliif
    from fpliif.infer.parser import FaceParser
    from fpliif.serve import ServeSettings, create_app
    from fpliif.serve.imaging import decode_image, open_upload

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx`")
        from fastapi.testclient import TestClient

    f = np.linspace(0, 1, 48 * 48, dtype=np.float32).reshape(48, 48)
    buf = io.BytesIO()
    Image.fromarray(f, mode="F").save(buf, format="TIFF")
    data = buf.getvalue()
    rgb = decode_image(open_upload(data, "image/tiff", 10**6))
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 48, 3)
    np.testing.assert_array_equal(rgb[..., 0], np.rint(f * 255).astype(np.uint8))

    torch.manual_seed(0)
    tiny = {"name": "fpliif", "args": {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8], "decoder_mlp": [16, 16]}}
    weights = tmp_path / "tiny.safetensors"
    fpliif.save(fpliif.make(tiny), weights)
    n = torch.get_num_threads()
    try:
        with TestClient(create_app(FaceParser.from_pretrained(weights), ServeSettings(torch_threads=0))) as client:
            r = client.post("/v1/parse?aligned=true", files={"file": ("f.tif", data, "image/tiff")})
    finally:
        torch.set_num_threads(n)
    assert r.status_code == 200, r.text
    out = Image.open(io.BytesIO(r.content))
    assert out.format == "PNG" and out.size == (48, 48)


def _modes() -> dict[str, Image.Image]:
    """Small images of every kind :func:`to_rgb` has a rule for (odd sizes: strips end mid-image)."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (13, 11, 3), dtype=np.uint8)
    images = {m: Image.fromarray(rgb).convert(m) for m in ("RGB", "L", "1", "CMYK", "YCbCr", "HSV", "P", "LA")}
    images["RGBA"] = Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (13, 11), dtype=np.uint8)]), "RGBA")
    images["PA"] = images["RGBA"].convert("PA")
    images["RGB+tRNS"] = Image.fromarray(rgb)
    images["RGB+tRNS"].info["transparency"] = tuple(int(v) for v in rgb[0, 0])
    images["P+tRNS"] = images["P"].copy()
    images["P+tRNS"].info["transparency"] = 3
    images["I;16"] = Image.fromarray(rng.integers(0, 65536, (13, 11), dtype=np.uint16))
    images["I"] = Image.fromarray(rng.integers(-5, 70000, (13, 11), dtype=np.int32), "I")
    images["F"] = Image.fromarray(rng.uniform(-0.2, 1.2, (13, 11)).astype(np.float32), "F")
    return images


def test_large_images_convert_in_strips_to_the_same_pixels(monkeypatch, tmp_path):
    import fpliif.imaging as imaging

    whole = {name: to_rgb(img) for name, img in _modes().items()}
    monkeypatch.setattr(imaging, "STRIP_PIXELS", 20)  # strips of 1 row (width 11) plus a remainder
    for name, img in _modes().items():
        np.testing.assert_array_equal(to_rgb(img), whole[name], err_msg=name)
    tiff = np.arange(13 * 11, dtype=np.uint16).reshape(13, 11) * 40
    path = _save(tmp_path / "g.tif", Image.fromarray(tiff))
    with Image.open(path) as img:
        img.tag_v2[258] = (12,)  # 12-bit samples (Pillow writes 16): scaled by the file's depth in every strip
        expected = ((np.minimum(tiff, 4095).astype(np.int64) * 255 + 2047) // 4095).astype(np.uint8)
        np.testing.assert_array_equal(to_rgb(img), np.repeat(expected[..., None], 3, axis=2))


def test_large_image_conversion_holds_no_whole_image_copies():
    """A 6 MP RGB image: the output array plus one strip, not the two full copies of ``np.asarray``."""
    import tracemalloc

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (2000, 3000, 3), dtype=np.uint8))
    img.load()
    tracemalloc.start()
    try:
        out = to_rgb(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(out, np.asarray(img))
    assert peak < 1.5 * out.nbytes, f"peak {peak / 1e6:.1f} MB for an output of {out.nbytes / 1e6:.1f} MB"
