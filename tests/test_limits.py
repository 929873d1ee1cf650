"""Resource limits (issue 16): pixel limit, decoder-work budget and deadlines in the library and ``fpliif parse``;
overlays without full-size float copies; untrusted weight files refused before anything is allocated."""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import fpliif
from conftest import TINY_SPEC
from fpliif import limits
from fpliif.cli import main
from fpliif.infer.images import load_image
from fpliif.infer.parser import FaceParser
from fpliif.infer.result import blend_labels, class_share, render_overlay
from fpliif.labels import CELEBAMASK_HQ
from fpliif.models import checkpoint


@pytest.fixture(scope="module")
def tiny_parser(tiny_file) -> FaceParser:
    return FaceParser.from_pretrained(tiny_file, decode="dense")  # (counts decode calls: one per dense parse)


def png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (a decompression bomb's header) with a tiny, short body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class SlowDecode:
    """Wraps a backend's decode: counts the calls and sleeps ``delay`` seconds in each."""

    def __init__(self, decode, delay: float):
        self.decode, self.delay, self.calls = decode, delay, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        time.sleep(self.delay)
        return self.decode(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- pixels
def test_pixel_limit_refuses_from_the_header_without_pillows_warning(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(12000, 12000))  # 144 M pixels: Pillow would only warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        with pytest.raises(limits.TooManyPixels) as info:
            load_image(bomb)
    text = str(info.value)
    assert str(bomb) in text and "144,000,000" in text and f"{limits.DEFAULT_MAX_PIXELS:,}" in text
    assert "--max-pixels" in text and isinstance(info.value, ValueError)
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(20000, 20000))  # beyond Pillow's own error limit: still our message
    with pytest.raises(limits.TooManyPixels, match="huge.png"):
        load_image(huge)
    # the limit is configurable: argument, then environment; 0 disables it (the fake body then fails to decode)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(small)
    with pytest.raises(limits.TooManyPixels, match="600 pixels"):
        load_image(small, max_pixels=500)
    monkeypatch.setenv(limits.MAX_PIXELS_ENV, "500")
    with pytest.raises(limits.TooManyPixels):
        load_image(small)
    assert load_image(small, max_pixels=600).shape == (20, 30, 3)
    monkeypatch.setenv(limits.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match="FPLIIF_MAX_PIXELS"):
        load_image(small)
    monkeypatch.delenv(limits.MAX_PIXELS_ENV)
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(bomb, max_pixels=0)


@pytest.mark.parametrize(
    "value, expected",
    [("", limits.DEFAULT_MAX_PIXELS), ("  ", limits.DEFAULT_MAX_PIXELS), ("123", 123), (" 7\n", 7)]
    + [("40_000_000", 40_000_000), ("-5", None), ("1e6", None), ("abc", None), ("0", None), ("\u00b2", None)]
    + [("\u0661\u0662", None), ("1__0", None), ("_", None), ("1.5", None), ("0x10", None), ("+5", None)],
)
def test_max_pixels_variable_accepts_only_positive_integers(monkeypatch, value, expected):
    monkeypatch.setenv(limits.MAX_PIXELS_ENV, value)
    if expected is not None:
        assert limits.default_max_pixels() == expected
        return
    with pytest.raises(ValueError, match=r"^\$FPLIIF_MAX_PIXELS: expected a positive integer.*got ") as e:
        limits.default_max_pixels()
    assert repr(value)[:20] in str(e.value)  # the value as given, quoted
    assert limits.resolve_limit(50, "max_pixels", limits.default_max_pixels) == 50  # not read when not needed


def test_bad_max_pixels_variable_is_one_usage_error(tiny_file, tmp_path, monkeypatch, capsys):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setenv(limits.MAX_PIXELS_ENV, "1e6")
    argv = ["parse", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--weights", tiny_file, "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("$FPLIIF_MAX_PIXELS") == 1 and "Traceback" not in err
    assert main([*argv, "--aligned", "--max-pixels", "1000"]) == 0  # an explicit limit does not read it


def test_aligned_inputs_are_refused_from_the_header_before_decoding(tiny_file, tmp_path, capsys):
    big = tmp_path / "big.png"
    big.write_bytes(png_header(300, 200))  # the body is a stub: decoding it would fail with "cannot read image"
    seen = []

    def check(h, w):
        seen.append((h, w))
        limits.check_points(h * w, 1000, "the output")

    with pytest.raises(limits.OverBudget, match="60,000 decoder queries"):
        load_image(big, check=check)
    assert seen == [(200, 300)]
    big.write_bytes(png_header(6000, 6000))  # under the pixel limit, over the default decoder budget
    argv = ["parse", str(big), "--out", str(tmp_path / "out"), "--weights", tiny_file, "--aligned", "--quiet"]
    assert main(argv) == 1  # one input skipped, as every input refused in a run
    err = capsys.readouterr().err
    assert "skipped" in err and "36,000,000 decoder queries" in err and "own size" in err
    assert "cannot read" not in err


def test_face_parser_shares_the_pixel_limit(tiny_file, tmp_path, monkeypatch):
    parser = FaceParser.from_pretrained(tiny_file, max_pixels=1000)
    with pytest.raises(limits.TooManyPixels, match="2,500 pixels"):
        parser(np.zeros((50, 50, 3), np.uint8), boxes=[])
    with pytest.raises(limits.TooManyPixels, match="pil.png"):
        path = tmp_path / "pil.png"
        Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(path)
        parser(Image.open(path), boxes=[])  # a lazy PIL image: checked before it is decoded
    assert parser(np.zeros((20, 20, 3), np.uint8), boxes=[]).labels.shape == (20, 20)
    monkeypatch.setenv(limits.MAX_PIXELS_ENV, "100")
    assert FaceParser.from_pretrained(tiny_file).max_pixels == 100
    assert FaceParser.from_pretrained(tiny_file, max_pixels=0).max_pixels is None
    with pytest.raises(ValueError, match="max_pixels"):
        FaceParser.from_pretrained(tiny_file, max_pixels=-5)


def test_aligned_outputs_are_bounded_before_any_work(tiny_parser, monkeypatch):
    spy = SlowDecode(tiny_parser.backend.decode, 0.0)
    monkeypatch.setattr(tiny_parser.backend, "decode", spy)
    crop = np.zeros((64, 64, 3), np.uint8)
    t0 = time.perf_counter()
    with pytest.raises(limits.TooManyPixels, match=r"100000x100000 = 10,000,000,000 pixels"):
        tiny_parser.parse_aligned(crop, size=100_000)  # was a 37 GiB allocation
    with limits.scope(max_points=1000):
        with pytest.raises(limits.OverBudget, match=r"4,096 decoder queries.*1,000") as info:
            tiny_parser.parse_aligned(crop)  # implied size: the crop's own
        assert "own size" in str(info.value)
        with pytest.raises(limits.OverBudget, match="8,192"):
            tiny_parser.parse_aligned(np.zeros((16, 16, 3), np.uint8), size=64, tta=True)
        assert tiny_parser.parse_aligned(np.zeros((16, 16, 3), np.uint8), size=30).labels.shape == (30, 30)
    assert spy.calls == 1 and time.perf_counter() - t0 < 60  # only the accepted 30 x 30 was decoded


def test_photo_faces_are_bounded_after_detection(tiny_file, monkeypatch):
    parser = FaceParser.from_pretrained(
        tiny_file, max_points=5000, context=False, detector=lambda img: [((10, 10, 50, 50), 0.9)] * 6
    )  # the context window's share of the budget: tests/test_parser.py
    spy = SlowDecode(parser.backend.decode, 0.0)
    monkeypatch.setattr(parser.backend, "decode", spy)
    photo = np.zeros((120, 160, 3), np.uint8)
    with pytest.raises(limits.OverBudget, match=r"6 face\(s\).*5,000") as info:
        parser(photo)
    assert info.value.value > 5000 and spy.calls == 0
    assert len(parser(photo, boxes=[(10, 10, 50, 50)]).faces) == 1  # one face fits


def test_deadline_stops_decoding_between_chunks(tiny_file, monkeypatch):
    parser = FaceParser.from_pretrained(tiny_file, max_queries=256)
    spy = SlowDecode(parser.backend.decode, 0.01)
    monkeypatch.setattr(parser.backend, "decode", spy)
    t0 = time.perf_counter()
    with limits.scope(deadline=0.15), pytest.raises(limits.DeadlineExceeded, match="0.15 s"):
        parser.parse_aligned(np.zeros((32, 32, 3), np.uint8), size=128)  # 64 chunks: 0.64 s without the check
    assert spy.calls < 40 and time.perf_counter() - t0 < 10  # 64 chunks without the deadline check
    limits.check_deadline()  # outside the scope: no deadline


def test_model_decode_checks_the_deadline_between_its_chunks():
    model = fpliif.make(TINY_SPEC).eval()
    z = model.encode(torch.rand(1, 3, 32, 32))
    coords = torch.rand(1, 4096, 2) * 2 - 1
    with limits.scope(deadline=limits.Deadline(1.0, at=time.monotonic() - 1)):
        with pytest.raises(limits.DeadlineExceeded):
            model.decode(z, coords, chunk_size=1024)
        model.decode(z, coords[:, :1000], chunk_size=1024)  # one chunk: nothing to interrupt
    with pytest.raises(ValueError, match="positive"):
        limits.Deadline(float("nan"))


def test_scopes_nest():
    with limits.scope(deadline=100, max_points=10):
        assert limits.effective("max_points", 99) == 10 and limits.effective("max_pixels", 7) == 7
        with limits.scope(deadline=1000, max_pixels=0):
            assert limits.effective("max_points", 99) == 10 and limits.effective("max_pixels", 7) is None
            assert limits._SCOPE.get().deadline.seconds == 100  # the earlier deadline stays
    assert limits.effective("max_points", 99) == 99


def expired() -> limits.Deadline:
    return limits.Deadline(1.0, at=time.monotonic() - 1)


def test_adaptive_decoding_checks_the_deadline_between_passes():
    from fpliif.adaptive import adaptive_decode

    calls = []

    def decode(coords):
        calls.append(coords.shape[1])
        return np.zeros((*coords.shape[:2], 3), np.float32)

    with limits.scope(deadline=expired()), pytest.raises(limits.DeadlineExceeded):
        adaptive_decode(decode, (64, 64), chunk=100)
    assert calls == []
    adaptive_decode(decode, (64, 64), chunk=100)  # no scope: no deadline
    assert len(calls) > 1


@pytest.mark.parametrize("name", ["haar", "mtcnn"])
def test_detectors_check_the_deadline_and_bound_their_input(name, monkeypatch):
    from fpliif.infer import detect

    det = detect.make_detector(name)
    image = np.random.default_rng(0).integers(0, 256, (300, 200, 3), np.uint8)
    with limits.scope(deadline=expired()), pytest.raises(limits.DeadlineExceeded):
        det(image)
    for bad in (0, -5, 1.5, True, "big"):
        with pytest.raises(ValueError, match="max_side: expected a positive number of pixels"):
            detect.make_detector(name, max_side=bad)
    runs = []
    if name == "mtcnn":  # stops between pyramid levels: one level runs, then the deadline has passed
        det._load()  # the nets are read before the deadline starts
        run = det._run
        monkeypatch.setattr(det, "_run", lambda *a: runs.append(1) or time.sleep(0.3) or run(*a))
        with limits.scope(deadline=0.1), pytest.raises(limits.DeadlineExceeded):
            det(image)
        assert len(runs) == 1
    seen = []  # a large image is shrunk to max_side before the detector proper runs; boxes are mapped back
    small = detect.make_detector(name, max_side=64)
    fake = [((0.0, 0.0, 32.0, 32.0), 5.0)] if name == "haar" else [np.zeros((1, 2, 1, 1), np.float32)] * 2
    monkeypatch.setattr(small, "_run", lambda net, x, *a: seen.append(x.shape) or fake)
    found = small(np.zeros((1000, 500, 3), np.uint8))
    assert seen and all(max(shape[-2:]) <= 64 for shape in seen)
    if name == "haar":
        assert len(found) == 1 and found[0][0] == pytest.approx((0, 0, 500, 500))


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_refuses_oversized_inputs_and_outputs(tiny_file, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(png_header(12000, 12000))
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "ok.png")
    Image.fromarray(np.zeros((150, 150, 3), np.uint8)).save(folder / "big.png")
    out = tmp_path / "out"
    common = ["parse", str(folder), "--out", str(out), "--weights", tiny_file, "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert main([*common, "--aligned", "--max-points", "10000"]) == 1
    err = capsys.readouterr().err
    assert "bomb.png" in err and "144,000,000 pixels" in err and "--max-pixels" in err
    assert "big.png" in err and "22,500 decoder queries" in err and "--max-points" in err and "own size" in err
    assert (out / "ok_labels.png").exists() and not (out / "big_labels.png").exists()
    # an explicit --size beyond the limits is a usage error before the model loads
    assert main([*common, "--aligned", "--size", "100000", "--overwrite"]) == 2
    assert "10,000,000,000 pixels" in capsys.readouterr().err
    assert main([*common, "--aligned", "--size", "5000", "--overwrite"]) == 2
    assert "--max-points" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse's usage error, naming the option
        main([*common, "--max-pixels", "-1"])
    assert e.value.code == 2 and "argument --max-pixels: expected an integer >= 0" in capsys.readouterr().err
    assert main([*common, "--aligned", "--max-pixels", "2000", "--overwrite"]) == 1
    assert "22,500 pixels" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- overlays
def test_blend_matches_the_float_formula():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (123, 77, 3), dtype=np.uint8)
    labels = rng.integers(0, 19, (123, 77)).astype(np.uint8)
    for alpha in (0.0, 0.3, 0.5, 1.0):
        colors = CELEBAMASK_HQ.color_array()[labels].astype(np.float32)
        ref = np.where((labels != 0)[..., None], base * (1 - alpha) + colors * alpha, base).round().astype(np.uint8)
        np.testing.assert_array_equal(blend_labels(base, labels, CELEBAMASK_HQ.color_array(), alpha, 1000), ref)


def test_overlay_holds_no_full_size_float_copies():
    h, w = 1500, 2000
    image = np.full((h, w, 3), 100, np.uint8)
    labels = np.ones((h, w), np.uint8)
    tracemalloc.start()
    try:
        img = render_overlay(image, labels, CELEBAMASK_HQ, alpha=0.5, legend=True, boxes=[(10, 10, 900, 900)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # built strip by strip into the one output image (Pillow keeps RGB at 4 bytes per pixel, and its memory is
    # traced too): under 5 bytes per pixel in all (the float version: > 80; with a blended copy of the image: > 7)
    assert peak < 5 * h * w, f"overlay peaked at {peak / (h * w):.1f} bytes per pixel"
    assert img.size[0] > w and np.asarray(img)[h // 2, w // 2].tolist() != [100, 100, 100]


def test_class_share_counts_in_strips_without_a_wide_copy():
    labels = np.random.default_rng(0).integers(0, 19, (4000, 4000), dtype=np.uint8)
    tracemalloc.start()
    try:
        share = class_share(labels, CELEBAMASK_HQ.classes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < labels.nbytes, f"class_share peaked at {peak / labels.size:.1f} bytes per pixel"  # whole: 8
    expected = np.bincount(labels.ravel(), minlength=19) / labels.size
    assert list(share.values()) == pytest.approx(expected.tolist())


# ---------------------------------------------------------------------------------------------- weights files
def _variant(tiny_file: str, tmp_path, spec=None, state=None, **meta_changes) -> str:
    with safe_open(tiny_file, "pt") as f:
        meta = dict(f.metadata())
    if spec is not None:
        meta["spec"] = spec if isinstance(spec, str) else json.dumps(spec)
    meta.update(meta_changes)
    path = tmp_path / "variant.safetensors"
    save_file(state if state is not None else load_file(tiny_file), str(path), metadata=meta)
    return str(path)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"bogus": 1}, "spec.args.bogus"),
        ({"width": 10**7}, "spec.args.width"),
        ({"width": "8"}, "spec.args.width"),
        ({"depths": [1, 1, 10**6]}, "spec.args.depths"),
        ({"decoder_mlp": [10**6]}, "spec.args.decoder_mlp"),
        ({"temperature": float("nan")}, "spec.args.temperature"),
        ({"classes": ["x"] * 10**5}, "spec.args.classes"),
        ({"norm": {"a": 1}}, "spec.args.norm"),
        ({"width": 512}, "weights do not match"),  # within bounds, but not what the file holds
    ],
)
def test_weight_spec_is_validated_before_anything_is_built(tiny_file, tmp_path, monkeypatch, change, field):
    devices = []
    real_make = checkpoint.registry.make

    def spy(spec, **kw):
        devices.append(torch.empty(0).device.type)
        return real_make(spec, **kw)

    monkeypatch.setattr(checkpoint.registry, "make", spy)
    spec = {"name": "fpliif", "args": {**TINY_SPEC["args"], **change}}
    path = _variant(tiny_file, tmp_path, json.dumps(spec))
    with pytest.raises(ValueError) as info:
        checkpoint.load(path)
    assert path in str(info.value) and field in str(info.value)
    assert all(d == "meta" for d in devices)  # nothing was allocated for real


@pytest.mark.parametrize(
    "spec, meta, text",
    [
        ("{", {}, "not valid JSON"),
        ("[" * 100_000, {}, "not valid JSON"),
        ("[1, 2]", {}, "expected an object"),
        (json.dumps({"name": "nope", "args": {}}), {}, "spec.name"),
        (json.dumps({"name": "fpliif", "args": [1]}), {}, "spec.args"),
        (json.dumps({"name": "fpliif", "args": {}, "code": "rm -rf"}), {}, "unknown field"),
        (None, {"input_size": "20000"}, "input_size"),
        (None, {"input_size": "-3"}, "input_size"),
        (None, {"input_size": "1e9"}, "input_size"),
    ],
)
def test_bad_weight_metadata_is_refused_naming_the_field(tiny_file, tmp_path, spec, meta, text):
    path = _variant(tiny_file, tmp_path, spec, **meta)
    with pytest.raises(ValueError, match=text) as info:
        checkpoint.load(path)
    assert path in str(info.value)


def test_nan_and_inf_weights_are_refused(tiny_file, tmp_path):
    for bad in (float("nan"), float("inf")):
        state = load_file(tiny_file)
        key = sorted(k for k, v in state.items() if v.is_floating_point())[0]
        state[key].view(-1)[0] = bad
        path = _variant(tiny_file, tmp_path, state=state)
        with pytest.raises(ValueError, match=f"{key}.*NaN or infinite"):
            checkpoint.load(path)
    assert checkpoint.load(tiny_file).weights_metadata["input_size"] == "32"
