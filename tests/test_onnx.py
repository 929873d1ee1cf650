"""ONNX export (encoder + implicit decoder, coordinates as a runtime input) and the onnxruntime backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fpliif
from fpliif.cli import main
from fpliif.infer.cli import example_image
from fpliif.infer.geometry import pixel_centers
from fpliif.infer.parser import FaceParser

pytest.importorskip("onnx", reason="onnx not installed (pip install 'fpliif[onnx]')")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'fpliif[onnx]')")

from fpliif.infer.onnx_backend import OnnxModel  # noqa: E402
from fpliif.infer.onnx_export import export_onnx  # noqa: E402

TINY = {
    "name": "fpliif",
    "args": {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8], "decoder_mlp": [16, 16]},
}
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(1)
    return fpliif.make(TINY).eval()


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return {
        "static": export_onnx(tiny, d / "static.onnx", input_size=64),
        "dynamic": export_onnx(tiny, d / "dynamic.onnx", input_size=64, dynamic=True),
        "single": export_onnx(tiny, d / "single.onnx", input_size=64, dynamic=True, split=False),
    }


def test_split_export_is_two_graphs_and_the_encoder_runs_once(tiny, exported):
    om = OnnxModel(exported["dynamic"])
    assert om.split and exported["dynamic"].with_name("dynamic.decoder.onnx").is_file()
    assert not OnnxModel(exported["single"]).split
    x = torch.rand(2, 3, 64, 48)
    coords = torch.rand(2, 300, 2) * 2 - 1
    with torch.inference_mode():
        ref = tiny.decode(tiny.encode(x), coords).numpy()
        cells = tiny.prepare(tiny.encode(x)).cells.numpy()
    latent = om.encode(x.numpy())
    assert latent.shape == cells.shape and np.abs(latent - cells).max() < 1e-4
    assert om.latent_size(latent) == (16, 12)
    om.chunk_size = 64  # 5 query chunks: the encoder graph still runs once
    calls = []
    run = om.session.run
    om.session.run = lambda *a, **k: calls.append(1) or run(*a, **k)
    out = om.decode_at(x.numpy(), coords.numpy())
    assert len(calls) == 1 and np.abs(out - ref).max() < 1e-4
    single = OnnxModel(exported["single"])
    assert np.abs(single.decode_at(x.numpy(), coords.numpy()) - ref).max() < 1e-4


def test_split_export_refuses_the_decoder_half_and_a_missing_decoder(exported, tmp_path):
    with pytest.raises(ValueError, match="decoder half of a split export; load its encoder"):
        OnnxModel(exported["static"].with_name("static.decoder.onnx"))
    lonely = tmp_path / "static.onnx"
    lonely.write_bytes(exported["static"].read_bytes())
    with pytest.raises(FileNotFoundError, match="static.decoder.onnx is missing"):
        OnnxModel(lonely)


def test_static_export_matches_torch_at_any_output_size(tiny, exported):
    om = OnnxModel(exported["static"])
    assert om.classes == tiny.classes and om.temperature == tiny.temperature and om.input_size == 64
    x = torch.rand(1, 3, 64, 64)
    for size in [(64, 64), (37, 91), (128, 128)]:
        with torch.inference_mode():
            ref = tiny(x, size=size).numpy()
        out = om(x.numpy(), size)
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() < 1e-4
    with pytest.raises(ValueError, match="exported for 64x64"):
        om(np.zeros((1, 3, 32, 32), np.float32), 16)


def test_dynamic_export_batch_and_spatial(tiny, exported):
    om = OnnxModel(exported["dynamic"], chunk_size=1000)  # forces chunking over queries
    assert om.static_hw is None
    for shape in [(3, 3, 48, 80), (1, 3, 100, 60)]:
        x = torch.rand(*shape)
        coords = torch.rand(shape[0], 2345, 2) * 2 - 1
        with torch.inference_mode():
            ref = tiny.decode(tiny.encode(x), coords).numpy()
        out = om.decode_at(x.numpy(), coords.numpy())
        assert np.abs(out - ref).max() < 1e-4
    assert np.allclose(pixel_centers(5, 3), fpliif.models.base.pixel_centers(5, 3).numpy())


def test_face_parser_on_onnxruntime_matches_torch(tiny, exported):
    torch_p = FaceParser(tiny, input_size=64)
    onnx_p = FaceParser.from_onnx(exported["static"])
    assert onnx_p.input_size == 64
    a = torch_p(example_image(), return_probs=True)
    b = onnx_p(example_image(), return_probs=True)
    assert [f.crop for f in a.faces] == [f.crop for f in b.faces]
    assert np.abs(a.probs - b.probs).max() < 1e-4
    assert (a.labels == b.labels).mean() > 0.999
    c = onnx_p.parse_aligned(example_image(), size=96)
    assert c.labels.shape == (96, 96)


def test_flip_tta_on_onnxruntime_matches_torch(tiny, exported):
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    torch_p = FaceParser(tiny, input_size=64)
    for path in (exported["static"], exported["dynamic"]):
        onnx_p = FaceParser.from_onnx(path, tta=True)
        a = torch_p.parse_aligned(img, size=(12, 20), return_probs=True, tta=True)
        b = onnx_p.parse_aligned(img, size=(12, 20), return_probs=True)
        assert np.abs(a.probs - b.probs).max() < 1e-4
        plain = onnx_p.parse_aligned(img, size=(12, 20), return_probs=True, tta=False)
        assert np.abs(b.probs - plain.probs).max() > 1e-3
        box = [[8, 8, 56, 56]]
        a = torch_p(img, boxes=box, return_probs=True, tta=True)
        b = onnx_p(img, boxes=box, return_probs=True)
        assert np.abs(a.probs - b.probs).max() < 1e-4


def test_cli_export_then_parse_with_onnxruntime(tmp_path, tiny, capsys):
    w = fpliif.save(tiny, tmp_path / "tiny.safetensors")
    model = tmp_path / "model.onnx"
    assert (
        main(["export", "onnx", "--out", str(model), "--weights", str(w), "--size", "64", "--dynamic"]) == 0
    )
    assert "max |logit diff|" in capsys.readouterr().out
    assert main(["export", "onnx", "--out", str(model), "--weights", str(w)]) == 2  # exists
    assert (tmp_path / "model.decoder.onnx").is_file()
    assert main(["export", "onnx", "--out", str(tmp_path / "model.bin"), "--weights", str(w)]) == 2
    out = tmp_path / "out"
    rc = main(["parse", str(example_image()), "--out", str(out), "--onnx", str(model), "--format", "json"])
    assert rc == 0
    assert len(json.loads((out / "astronaut.json").read_text())["faces"]) == 1


def test_onnxruntime_path_does_not_import_torch(exported, tmp_path):
    """Run ``parse --backend onnxruntime`` in a fresh interpreter where ``import torch`` fails.

    ``fpliif/__init__.py`` imports the (torch) models eagerly, so the package is stubbed to load only
    its torch-free submodules (fpliif.labels, fpliif.infer.*).
    """
    out = tmp_path / "out"
    code = f"""
import sys, types, argparse
sys.modules["torch"] = None
pkg = types.ModuleType("fpliif"); pkg.__path__ = [{str(SRC / "fpliif")!r}]; sys.modules["fpliif"] = pkg
from fpliif.infer import cli
ap = argparse.ArgumentParser(); cli.add_commands(ap.add_subparsers())
args = ap.parse_args(["parse", {str(example_image())!r}, "--out", {str(out)!r}, "--onnx",
                      {str(exported["static"])!r}, "--overlay", "--format", "json", "--quiet"])
rc = args.func(args)
assert sys.modules["torch"] is None
assert not [m for m in sys.modules if m.startswith("torch.")]
print("RC", rc)
"""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "RC 0" in r.stdout
    assert (out / "astronaut_labels.png").is_file() and (out / "astronaut_overlay.png").is_file()


def test_bench_covers_the_onnxruntime_backend(tiny, exported):
    from fpliif.bench import run_bench
    from fpliif.infer.onnx_backend import OnnxModel

    onnx_model = OnnxModel(exported["dynamic"], threads=1)
    result = run_bench(tiny, sizes=(16, 24), input_size=64, runs=1, threads=1, onnx_model=onnx_model)
    assert result["backend"] == "onnxruntime"
    assert set(result["fps"]) == {"16", "24"} and all(v > 0 for v in result["fps"].values())
    assert result["macs"]["24"] > result["macs"]["16"] > 0


def test_adaptive_decoding_on_onnxruntime_matches_torch(tiny, exported):
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    everywhere = {"min_coarse": 8, "margin": 1.0}  # re-queries every pixel: equals dense
    torch_p = FaceParser(tiny, input_size=64, adaptive=everywhere)
    for path in (exported["static"], exported["dynamic"], exported["single"]):
        onnx_p = FaceParser.from_onnx(path, adaptive=everywhere, decode="adaptive")
        latent = onnx_p.backend.encode(np.zeros((1, 3, 64, 64), np.float32))[0]
        assert onnx_p.backend.latent_size(latent) == (16, 16)
        for tta in (False, True):
            dense = torch_p.parse_aligned(img, size=(37, 90), return_probs=True, tta=tta)
            b = onnx_p.parse_aligned(img, size=(37, 90), return_probs=True, tta=tta)
            assert np.abs(dense.probs - b.probs).max() < 1e-4
        default = FaceParser.from_onnx(path, decode="adaptive")
        a = FaceParser(tiny, input_size=64, decode="adaptive").parse_aligned(img, size=(37, 90))
        assert (default.parse_aligned(img, size=(37, 90)).labels == a.labels).mean() > 0.99
