"""Cases a new-user audit of the commands and the API found (session 15), each as it was reported: ``--out .``,
``--out`` inside or equal to an input folder, an output that is another input, stale video frames after
``--overwrite``, ``fpliif eval --out`` over an existing file, a loader worker's traceback as the error, and integer
or RGBA arrays. Tiny model and images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fpliif.cli import error_text, main
from fpliif.infer.images import array_to_rgb
from test_tracking import flat_clip


def _save(path, side: int = 24, value: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side, 3), value, np.uint8)).save(path)


def _parse(tiny_file: str, *argv: str) -> list[str]:
    return ["parse", *argv, "--weights", tiny_file, "--aligned", "--decode", "dense", "--no-progress"]


# ---------------------------------------------------------------------------------------------- fpliif parse
def test_out_dot_writes_into_the_current_folder(tiny_file, tmp_path, capsys, monkeypatch):
    """Before: ``error: max() arg is an empty sequence`` (the output-name check of a path without parts)."""
    _save(tmp_path / "raw" / "a.png")
    monkeypatch.chdir(tmp_path)
    assert main(_parse(tiny_file, "raw", "--out", ".")) == 0, capsys.readouterr().err
    assert (tmp_path / "a_labels.png").is_file()


def test_out_equal_to_the_input_folder_is_named_as_such(tiny_file, tmp_path, capsys, monkeypatch):
    """Before: ``same: no image files found`` although the folder held images (they lie inside --out)."""
    _save(tmp_path / "same" / "x.png")
    monkeypatch.chdir(tmp_path)
    assert main(_parse(tiny_file, "same", "--out", "same/")) == 1
    err = capsys.readouterr().err
    assert "same: every image file in it lies inside --out same" in err and "no image files found" not in err
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == ["x.png"]  # nothing written


def test_input_images_inside_out_are_reported_not_silently_skipped(tiny_file, tmp_path, capsys):
    _save(tmp_path / "in" / "a.png")
    _save(tmp_path / "in" / "sub" / "b.png")
    assert main(_parse(tiny_file, str(tmp_path / "in"), "--out", str(tmp_path / "in" / "sub"))) == 0
    err = capsys.readouterr().err
    assert f"skipped 1 image file(s) inside --out {tmp_path / 'in' / 'sub'}" in err
    assert (tmp_path / "in" / "sub" / "a_labels.png").is_file() and not (
        tmp_path / "in" / "sub" / "b_labels.png"
    ).exists()


def test_an_output_that_is_an_input_of_the_run_is_never_written_over(tiny_file, tmp_path, capsys):
    """Before: with --overwrite, x.jpg's overlay replaced the user's photo x_overlay.png, then that was parsed."""
    _save(tmp_path / "d" / "x.png", value=90)
    _save(tmp_path / "d" / "x_overlay.png", 30, value=200)
    before = (tmp_path / "d" / "x_overlay.png").read_bytes()
    files = [str(tmp_path / "d" / "x.png"), str(tmp_path / "d" / "x_overlay.png")]
    argv = _parse(tiny_file, *files, "--out", str(tmp_path / "d"), "--overlay", "--overwrite")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"refused {files[0]}: its output {files[1]} is an input of this run" in err
    assert (tmp_path / "d" / "x_overlay.png").read_bytes() == before
    assert (tmp_path / "d" / "x_overlay_labels.png").is_file()  # the other input was parsed


def test_video_overwrite_leaves_no_frames_of_the_earlier_run(tiny_file, tmp_path, capsys):
    clip = flat_clip(tmp_path / "clip.avi")  # 5 frames
    frames = tmp_path / "out" / "clip_labels"
    base = ["parse", str(clip), "--video", "--out", str(tmp_path / "out"), "--weights", tiny_file, "--no-progress"]
    assert main(base) == 0
    (frames / "notes.txt").write_text("mine")
    assert main([*base, "--max-frames", "2", "--overwrite"]) == 0
    assert sorted(p.name for p in frames.iterdir()) == ["000000.png", "000001.png", "notes.txt"]
    assert main([*base, "--max-frames", "3", "--overwrite", "--format", "npy"]) == 0
    assert sorted(p.name for p in frames.iterdir()) == ["000000.npy", "000001.npy", "000002.npy", "notes.txt"]
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------- fpliif eval
def _dataset(root, bad_mask: bool = False) -> None:
    for name in ("a", "b"):
        _save(root / "images" / f"{name}.png", 16)
        side = 12 if bad_mask and name == "b" else 16
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((side, side), np.uint8), mode="L").save(root / "masks" / f"{name}.png")


def test_eval_out_refuses_an_existing_file_without_overwrite(tiny_file, tmp_path, capsys):
    _dataset(tmp_path / "ds")
    mine = tmp_path / "mine.json"
    mine.write_text("keep")
    argv = ["eval", "--data", str(tmp_path / "ds"), "--layout", "folder", "--split", "all", "--weights", tiny_file]
    argv += ["--workers", "0", "--no-progress", "--sizes", "16", "--lowres", ""]
    assert main([*argv, "--out", str(mine)]) == 2
    assert f"--out: {mine} exists (pass --overwrite to replace it)" in capsys.readouterr().err
    assert mine.read_text() == "keep"
    assert main([*argv, "--out", tiny_file, "--overwrite"]) == 2
    assert "--out: must differ from --weights" in capsys.readouterr().err
    assert main([*argv, "--out", str(mine), "--overwrite", "--json"]) == 0
    assert json.loads(mine.read_text())["images"] == 2
    capsys.readouterr()


def test_a_bad_file_found_in_a_loader_worker_is_one_line(tiny_file, tmp_path, capsys):
    """Before: ``Caught DataError in DataLoader worker process 0. Original Traceback ...`` (some 25 lines)."""
    _dataset(tmp_path / "ds", bad_mask=True)
    argv = ["eval", "--data", str(tmp_path / "ds"), "--layout", "folder", "--split", "all", "--weights", tiny_file]
    assert main([*argv, "--workers", "1", "--no-progress", "--sizes", "16", "--lowres", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("fpliif eval: error: ") and "b.png" in err and "12x12" in err, err


def test_error_text_keeps_plain_messages():
    assert error_text(ValueError("plain")) == "plain"
    assert error_text(KeyError("key")) == "key"
    wrapped = "Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
    wrapped += '  File "x.py", line 1, in f\nValueError: x.png: broken: really'
    assert error_text(ValueError(wrapped)) == "x.png: broken: really"


# ---------------------------------------------------------------------------------------------- arrays
def test_integer_arrays_scale_by_their_type_not_their_values():
    """Before: a uint16 array was divided by 257 only if some value exceeded 255 (one pixel changed the image)."""
    u8 = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    deep = u8.astype(np.uint16) * 257
    assert np.array_equal(array_to_rgb(deep), u8)
    low = u8.astype(np.uint16)  # 8-bit values in a uint16 array: 16-bit data, so nearly black
    assert int(array_to_rgb(low).max()) <= 1
    assert np.array_equal(array_to_rgb(u8.astype(np.int64)), u8)  # other integer types: 8-bit values
    with pytest.raises(ValueError, match=r"image: int32 images must hold 8-bit values 0..255, got range \[0, 256\]"):
        array_to_rgb(np.arange(4, dtype=np.int32).reshape(2, 2) * 256 // 3)
    with pytest.raises(ValueError, match=r"got range \[-1, 0\]"):
        array_to_rgb(np.full((2, 2), -1, np.int16) * np.eye(2, dtype=np.int16))


def test_rgba_arrays_are_composited_over_white_like_rgba_files():
    rgba = np.zeros((3, 3, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = np.array([0, 128, 255], np.uint8)[None, :]
    from fpliif.imaging import to_rgb

    expected = to_rgb(Image.fromarray(rgba, "RGBA"))
    assert np.array_equal(array_to_rgb(rgba), expected)
    assert (expected[:, 0] == 255).all() and (expected[:, 2] == [200, 0, 0]).all()
    floats = array_to_rgb(rgba.astype(np.float32) / 255)
    assert floats.dtype == np.uint8 and np.abs(floats.astype(int) - expected).max() <= 1


# ---------------------------------------------------------------------------------------------- messages
def test_option_errors_name_the_option(tiny_file, tmp_path, capsys):
    _save(tmp_path / "a.png")
    assert main(_parse(tiny_file, str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--max-decode-size", "3")) == 2
    assert "--max-decode-size: expected 0 (never) or an integer >= 8, got 3" in capsys.readouterr().err
    _dataset(tmp_path / "ds")
    eval_args = ["eval", "--weights", tiny_file, "--layout", "folder", "--no-progress"]
    assert main([*eval_args, "--data", str(tmp_path / "ds"), "--classes", "foo"]) == 2
    assert "error: --classes: unknown label set 'foo'" in capsys.readouterr().err
    assert main([*eval_args, "--data", str(tmp_path / "a.png")]) == 2
    assert f"--data {tmp_path / 'a.png'}: is a file; expected a dataset folder" in capsys.readouterr().err


def test_a_video_given_as_an_image_is_named_once_with_a_hint(tiny_file, tmp_path, capsys):
    clip = flat_clip(tmp_path / "clip.avi")
    assert main(_parse(tiny_file, str(clip), "--out", str(tmp_path / "o"))) == 1
    err = capsys.readouterr().err
    assert f"skipped {clip}: cannot read image" in err and err.count(str(clip)) == 1
    assert "videos are parsed with --video" in err


def test_api_errors_are_value_errors_that_say_what_is_expected(tiny_file):
    from fpliif import FaceParser

    with pytest.raises(ValueError, match="device: expected 'cpu' or 'cuda', got 'gpu'"):
        FaceParser.from_pretrained(tiny_file, device="gpu")
    result = FaceParser.from_pretrained(tiny_file).parse_aligned(np.full((32, 32, 3), 90, np.uint8))
    with pytest.raises(ValueError, match="mask: expected class names .* got 13"):
        result.mask(13)
    assert result.mask("hair", ["skin"]).shape == (32, 32)


def test_a_broken_link_in_an_input_folder_is_reported(tiny_file, tmp_path, capsys):
    """Before: a link with an image name that led nowhere was skipped without a word."""
    _save(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert main(_parse(tiny_file, str(tmp_path / "in"), "--out", str(tmp_path / "out"))) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'in' / 'gone.jpg'}: a link to a file that does not exist; skipped" in err
    assert (tmp_path / "out" / "a_labels.png").is_file()


def test_data_check_classes_on_a_fixed_layout_is_refused(tmp_path, capsys):
    """Before: ``fpliif data check --classes a,b,c`` on a CelebAMask-HQ root was silently ignored."""
    (tmp_path / "root" / "CelebA-HQ-img").mkdir(parents=True)
    assert main(["data", "check", "--data", str(tmp_path / "root"), "--classes", "a,b,c"]) == 2
    assert "--classes applies to the folder layout only ('celebamask-hq' has fixed classes)" in capsys.readouterr().err


def test_float_images_follow_one_range_rule_as_files_pil_images_and_arrays(tmp_path, caplog):
    """Session 16: a float TIFF holding 0..255 was clipped to near white (an all-background parse) with a warning,
    while the same numpy array raised; session 17: both raise, and both clip a small overshoot."""
    from fpliif.imaging import to_rgb
    from fpliif.infer.images import load_image

    data = np.linspace(0, 255, 24 * 24, dtype=np.float32).reshape(24, 24)
    Image.fromarray(data, mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f.tif: .*float images must have values in \[0, 1\], got range \[0, 255\]"):
        load_image(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"^image: float images must have values in \[0, 1\]"):
        array_to_rgb(np.repeat(data[..., None], 3, axis=2))
    over = np.linspace(0, 1.2, 24 * 24, dtype=np.float32).reshape(24, 24)
    assert to_rgb(Image.fromarray(over, mode="F")).max() == 255 and array_to_rgb(over).max() == 1.0  # clipped


# ------------------------------------------------------------------------------- session 16: photo-file audit
def test_jpeg_extensions_pillow_reads_are_found_and_other_files_are_counted(tiny_file, tmp_path, capsys):
    """Before: a folder's ``.jfif`` and ``.jpe`` JPEGs were skipped without a word (given by name they parsed)."""
    folder = tmp_path / "in"
    for name in ("a.jfif", "b.jpe", "c.JPG"):
        folder.mkdir(exist_ok=True)
        Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(folder / name, "JPEG")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\0")
    assert main(_parse(tiny_file, str(folder), "--out", str(tmp_path / "out"))) == 0
    err = capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").glob("*_labels.png")) == [
        "a_labels.png",
        "b_labels.png",
        "c_labels.png",
    ]
    assert "1 file(s) without an image extension passed over" in err


def test_only_the_first_frame_of_an_animated_file_is_parsed_and_that_is_said(tmp_path, caplog):
    from fpliif.infer.images import load_image

    frames = [Image.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (10, 120, 240)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with caplog.at_level("WARNING", logger="fpliif.imaging"):
        first = load_image(tmp_path / "anim.gif")
    assert abs(int(first.mean()) - 10) <= 2  # the first frame
    assert "anim.gif: 3 frames (GIF); the first is parsed (fpliif parse --video parses every frame)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="fpliif.imaging"):
        frames[0].save(tmp_path / "still.gif")
        load_image(tmp_path / "still.gif")
    assert "frames" not in caplog.text


def test_save_png_refuses_another_extension(tiny_file, tmp_path):
    """Before: ``result.save_png("x.jpg")`` wrote PNG data under a .jpg name."""
    from fpliif import FaceParser

    res = FaceParser.from_pretrained(tiny_file).parse_aligned(np.full((16, 16, 3), 90, np.uint8))
    with pytest.raises(ValueError, match=r"x\.jpg: an index PNG is written; give the file a \.png name"):
        res.save_png(tmp_path / "x.jpg")
    assert not (tmp_path / "x.jpg").exists() and res.save_png(tmp_path / "x.PNG").is_file()


def test_an_aligned_crop_far_from_square_is_warned_about(tiny_file, caplog):
    from fpliif import FaceParser

    parser = FaceParser.from_pretrained(tiny_file)
    with caplog.at_level("WARNING", logger="fpliif.infer"):
        parser.parse_aligned(np.full((20, 200, 3), 90, np.uint8), size=16)
    assert "200x20 is not square" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="fpliif.infer"):
        parser.parse_aligned(np.full((100, 110, 3), 90, np.uint8), size=16)
    assert caplog.text == ""


# -------------------------------------------------------------------------- session 17: video and API audit
def test_boxes_far_larger_than_the_image_or_not_finite_are_refused(tiny_file):
    """Before: a 1e4 box on a 24 px image ran for a minute, 1e5 failed in OpenCV's allocator, inf overflowed."""
    from fpliif import FaceParser

    parser = FaceParser.from_pretrained(tiny_file)
    img = np.full((24, 20, 3), 90, np.uint8)
    with pytest.raises(ValueError, match=r"boxes: box \[0.0, 0.0, 10000.0, 10000.0\] is 10000 px across, over 2x "):
        parser(img, boxes=[[0, 0, 1e4, 1e4]])
    with pytest.raises(ValueError, match=r"boxes\[1\]: box .* over 2x the longer side of the 20x24 image"):
        parser([img, img], boxes=[None, [[0, 0, 100, 100]]])
    with pytest.raises(ValueError, match="finite coordinates"):
        parser(img, boxes=[[0, 0, np.inf, np.inf]])
    assert len(parser(img, boxes=[[-10, -10, 35, 35]]).faces) == 1  # larger than the image, within 2x: parsed
    wild = FaceParser.from_pretrained(tiny_file, detector=lambda im: [((0, 0, 1e5, 1e5), 0.9)])  # a custom detector
    with pytest.raises(ValueError, match=r"^the detector: box .* is 100000 px across"):
        wild(img)


def test_switches_take_only_true_or_false(tiny_file):
    """Before: ``tta="no"`` ran with TTA (``bool("no")``), while ``extend="no"`` was refused."""
    from fpliif import FaceParser

    with pytest.raises(TypeError, match="tta: expected True or False, got 'no'"):
        FaceParser.from_pretrained(tiny_file, tta="no")
    parser = FaceParser.from_pretrained(tiny_file)
    img = np.full((24, 24, 3), 90, np.uint8)
    for call in (lambda: parser(img, boxes=[], tta="no"), lambda: parser.parse_aligned(img, tta=1)):
        with pytest.raises(TypeError, match="tta: expected True or False"):
            call()


def test_a_single_image_over_the_pixel_limit_is_named_image(tiny_file):
    from fpliif import FaceParser
    from fpliif.limits import TooManyPixels

    parser = FaceParser.from_pretrained(tiny_file, max_pixels=100)
    with pytest.raises(TooManyPixels, match=r"^image: "):
        parser(np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(TooManyPixels, match=r"^image\[1\]: "):
        parser([np.zeros((5, 5, 3), np.uint8), np.zeros((20, 20, 3), np.uint8)])


def test_a_read_only_output_folder_is_named_as_such(tmp_path, monkeypatch):
    import os

    from fpliif import cli

    monkeypatch.setattr(cli.os, "access", lambda *a, **k: False)
    monkeypatch.setattr(cli.os, "statvfs", lambda p: type("S", (), {"f_flag": os.ST_RDONLY})())
    with pytest.raises(ValueError, match=r"cannot write into .* \(read-only file system\)"):
        cli.check_output_path(str(tmp_path / "out"), "--out", folder=True)
    monkeypatch.setattr(cli.os, "statvfs", lambda p: type("S", (), {"f_flag": 0})())
    with pytest.raises(ValueError, match=r"\(permission denied\)"):
        cli.check_output_path(str(tmp_path / "out"), "--out", folder=True)


def test_an_onnx_file_given_as_weights_points_to_onnx(tmp_path):
    from fpliif.models.checkpoint import read_metadata

    (tmp_path / "m.onnx").write_bytes(b"\x08\x07" + bytes(64))
    with pytest.raises(ValueError, match=r"m\.onnx: not a readable safetensors weight file .*fpliif parse --onnx FILE"):
        read_metadata(tmp_path / "m.onnx")
