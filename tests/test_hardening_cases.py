"""Issue 16's remaining cases, each as it was reported: output names the OS refuses, ``photo.jpg`` beside
``photo.JPG``, eval's paths, hint and sizes, file-system errors after the work, and a photo of 16 tiled faces.
Tiny model and images; one MTCNN run on a 2048² photo."""

from __future__ import annotations

import errno

import numpy as np
import pytest
from PIL import Image

import fpliif
from conftest import TINY_SPEC as TINY
from fpliif.cli import main

LONG = "y" * 245  # a valid file name; with "_labels.png" added, longer than the 255 bytes file systems allow


def _save(path, side: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() == ".jpg" else "PNG"
    Image.fromarray(np.full((side, side, 3), 90, np.uint8)).save(path, format=fmt)


def _parse(tiny_file: str, *argv: str) -> list[str]:
    return ["parse", *argv, "--weights", tiny_file, "--aligned", "--decode", "dense", "--no-progress"]


# ---------------------------------------------------------------------------------------------- fpliif parse
@pytest.mark.parametrize("out_exists", [False, True])
def test_an_output_name_too_long_fails_that_input_not_the_run(tiny_file, tmp_path, capsys, out_exists):
    """Before: with --out existing, the existence check of the outputs raised ENAMETOOLONG: a traceback that
    aborted the whole folder run."""
    _save(tmp_path / "in" / "ok.png")
    _save(tmp_path / "in" / f"{LONG}.png")
    out = tmp_path / "out"
    if out_exists:
        out.mkdir()
    assert main(_parse(tiny_file, str(tmp_path / "in"), "--out", str(out))) == 1
    err = capsys.readouterr().err
    assert (out / "ok_labels.png").exists() and "Traceback" not in err
    assert any(LONG in line and ("cannot write" in line or "cannot be written" in line) for line in err.splitlines())
    assert sum(LONG in line for line in err.splitlines()) == 1  # that input alone


def test_case_variants_of_one_name_get_their_own_outputs(tiny_file, tmp_path, capsys):
    """Before: photo.jpg and photo.JPG both became photo_jpg_*, and the run was refused with advice to pass
    their folders (they were in one folder already)."""
    for name in ("photo.jpg", "photo.JPG", "x.png"):
        _save(tmp_path / "in" / name)
    out = tmp_path / "out"
    assert main(_parse(tiny_file, str(tmp_path / "in"), "--out", str(out))) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["photo_JPG_labels.png", "photo_jpg_labels.png", "x_labels.png"]


def test_same_path_under_two_inputs_gives_advice_that_applies(tiny_file, tmp_path, capsys):
    for folder in ("a", "b"):
        _save(tmp_path / folder / "x.png")
    argv = _parse(tiny_file, str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "would both write" in err and "separate runs with different --out" in err and "\n" not in err
    assert "pass their folders" not in err  # folders were passed: that advice did not apply


def test_a_file_system_error_after_the_work_is_one_line(tiny_file, tmp_path, capsys, monkeypatch):
    """Any OSError (disk full, read-only, ...) reaching the command line is one line naming the command."""
    from fpliif.infer import cli_parse

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x_labels.png"))

    monkeypatch.setattr(cli_parse, "cmd_parse", full)
    assert main(["parse", str(tmp_path / "x.png"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fpliif parse: error: [Errno 28] No space left on device") and "\n" not in err


# ---------------------------------------------------------------------------------------------- fpliif eval
def _dataset(root) -> None:
    """A folder-layout dataset of two images, ``b`` without a mask (a bad pair)."""
    for name in ("a", "b"):
        _save(root / "images" / f"{name}.png", 16)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(root / "masks" / "a.png")


@pytest.mark.parametrize("out", [f"{LONG * 2}.json", f"new/{LONG * 2}.json"])
def test_eval_out_the_os_refuses_is_a_usage_error_before_the_work(tmp_path, capsys, monkeypatch, out):
    """Before: an OSError traceback (a name too long), or one after the whole evaluation (in a new folder)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()
    monkeypatch.setattr("fpliif.eval.cli._load_model", lambda *a: pytest.fail("the model was loaded"))
    assert main(["eval", "--data", "DIR", "--layout", "folder", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fpliif eval: error: --out"), err
    assert "longer than the file system allows" in err or "File name too long" in err, err
    assert "\n" not in err and not (tmp_path / "new").exists()


def test_eval_bad_pair_hint_names_no_option_eval_lacks(tiny_file, tmp_path, capsys):
    """Before: the error told eval's user to pass --skip-bad, which eval does not have."""
    _dataset(tmp_path / "ds")
    argv = ["eval", "--data", str(tmp_path / "ds"), "--layout", "folder", "--split", "all", "--weights", tiny_file]
    assert main([*argv, "--workers", "0", "--no-progress", "--sizes", "16", "--lowres", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert "b.png" in err and "no mask" in err.lower() and "--skip-bad" not in err, err
    assert "data.skip_bad=true" in err and "\n" not in err


@pytest.mark.parametrize(
    "options, refused",
    [
        (["--sizes", "100000"], "100000"),  # was a 10^10-query decode (and a 10 GB mask) per image
        (["--sizes", "1024", "--tta"], "--tta"),  # a batch of 16: 33.5 M queries
        (["--sizes", "256", "--lowres", "2048"], "2048"),
        (["--sizes", "1024", "--batch-size", "8", "--tta"], None),
        (["--sizes", "512"], None),  # the defaults' sizes at the default batch of 16
    ],
)
def test_eval_work_per_batch_is_bounded_before_the_model_loads(tmp_path, capsys, monkeypatch, options, refused):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()

    def stop(*args):
        raise ValueError("model would load here")

    monkeypatch.setattr("fpliif.eval.cli._load_model", stop)
    assert main(["eval", "--data", "DIR", "--layout", "folder", *options]) == 2
    err = capsys.readouterr().err.strip()
    if refused is None:
        assert "model would load here" in err
    else:
        assert refused in err and "decoder queries" in err and "per batch" in err and "--batch-size" in err, err


# ---------------------------------------------------------------------------------------------- detection
def test_sixteen_tiled_faces_are_sixteen_faces():
    """The default detector on 4 x 4 tiles of the astronaut (2048²): one box per tile. Before (Haar with every
    box kept) the same photo gave 20, four of them false (cascade scores 0.46-1.12)."""
    pytest.importorskip("cv2", reason="needs OpenCV (the detectors)")
    from fpliif.infer.cli import example_image
    from fpliif.infer.images import load_image
    from fpliif.infer.parser import FaceParser

    photo = np.tile(load_image(example_image()), (4, 4, 1))
    dets = FaceParser(fpliif.make(TINY)).detect(photo)
    tiles = sorted((int((y1 + y2) / 2 // 512), int((x1 + x2) / 2 // 512)) for (x1, y1, x2, y2), *_ in dets)
    assert tiles == [(r, c) for r in range(4) for c in range(4)], [d[:2] for d in dets]
