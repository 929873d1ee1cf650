"""ONNX export (encoder + implicit decoder, coordinates as a runtime input) and the onnxruntime backend."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fpliif
from fpliif.cli import main
from fpliif.infer.cli import example_image
from fpliif.infer.geometry import pixel_centers
from fpliif.infer.parser import FaceParser

pytest.importorskip("onnx", reason="onnx not installed (pip install 'fpliif[onnx]')")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'fpliif[onnx]')")

from fpliif.infer.onnx_backend import CPU_SPLIT_CHUNK, OnnxModel  # noqa: E402
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
    # default query chunks: cache-sized for a split decoder on the CPU, large for a graph that re-encodes per chunk
    assert om.chunk_size == CPU_SPLIT_CHUNK < OnnxModel(exported["single"]).chunk_size == 65536
    assert OnnxModel(exported["dynamic"], chunk_size=123).chunk_size == 123
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
    with pytest.raises(FileNotFoundError, match=r"its decoder graph static\.decoder\.onnx is missing"):
        OnnxModel(lonely)
    renamed = tmp_path / "prod.onnx"
    renamed.write_bytes(exported["static"].read_bytes())
    with pytest.raises(FileNotFoundError, match=r"prod\.decoder\.onnx \(nor static\.decoder\.onnx, its name when"):
        OnnxModel(renamed)
    (tmp_path / "prod.decoder.onnx").write_bytes(exported["static"].with_name("static.decoder.onnx").read_bytes())
    assert OnnxModel(renamed).split  # a pair renamed together loads (the export id still ties the two)


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
    torch_p = FaceParser(tiny, input_size=64, amp="none")
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
    torch_p = FaceParser(tiny, input_size=64, amp="none")
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
    assert main(["export", "onnx", "--out", str(model), "--weights", str(w), "--size", "64", "--dynamic"]) == 0
    assert "max |logit diff|" in capsys.readouterr().out
    assert main(["export", "onnx", "--out", str(model), "--weights", str(w)]) == 2  # exists
    assert (tmp_path / "model.decoder.onnx").is_file()
    assert main(["export", "onnx", "--out", str(tmp_path / "model.bin"), "--weights", str(w)]) == 2
    out = tmp_path / "out"
    rc = main(["parse", str(example_image()), "--out", str(out), "--onnx", str(model), "--format", "json"])
    assert rc == 0
    assert len(json.loads((out / "astronaut.json").read_text())["faces"]) == 1


def test_cli_export_size_defaults_to_the_weights_input_size(tmp_path, tiny, capsys):
    """Without --size the export traces the input size the weights record (here 48, not the paper's 256); the
    help names that metadata, not a number."""
    from fpliif.models.checkpoint import read_metadata

    w = fpliif.save(tiny, tmp_path / "tiny48.safetensors", metadata={"input_size": "48"})
    assert read_metadata(w).input_size == 48
    model = tmp_path / "m.onnx"
    assert main(["export", "onnx", "--out", str(model), "--weights", str(w)]) == 0
    assert "input 48x48" in capsys.readouterr().out
    assert OnnxModel(model).input_size == 48
    assert export_onnx(tiny, tmp_path / "api.onnx", split=False) and OnnxModel(tmp_path / "api.onnx").input_size == 256
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--size SIZE input image size N (default: the input size the weights record in their metadata" in help_text
    assert "256" not in help_text


@pytest.mark.parametrize("argv", [["export", "onnx", "--out", "{out}"], ["bench", "--json", "--sizes", "16"]])
def test_torch_commands_without_torch_are_a_one_line_error(tmp_path, argv):
    """In a fresh interpreter where ``import torch`` fails, ``export`` (before: a ModuleNotFoundError traceback)
    and ``bench`` say in one line that they need PyTorch, and write nothing."""
    out = tmp_path / "m.onnx"
    code = f"""
import sys
sys.modules["torch"] = None
from fpliif.cli import main
print("RC", main({[a.format(out=out) for a in argv]!r}))
"""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert "RC 2" in r.stdout, r.stderr
    assert r.stderr.startswith(f"fpliif {argv[0]}: error: needs PyTorch (") and r.stderr.count("\n") == 1, r.stderr
    assert "pip install torch" in r.stderr and not out.exists()


def test_export_creates_missing_output_folders_and_says_so(tmp_path, tiny, capsys):
    """``export --out a/b/m.onnx`` creates a/b, as ``parse --out`` creates its folder; ``--help`` says so."""
    w = fpliif.save(tiny, tmp_path / "tiny.safetensors")
    out = tmp_path / "a" / "b" / "m.onnx"
    assert main(["export", "onnx", "--out", str(out), "--weights", str(w), "--size", "32"]) == 0
    assert out.is_file() and out.with_name("m.decoder.onnx").is_file()
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "missing folders are created, as for parse --out" in " ".join(capsys.readouterr().out.split())


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
    from fpliif.bench.inference import run_bench
    from fpliif.infer.onnx_backend import OnnxModel

    onnx_model = OnnxModel(exported["dynamic"], threads=1)
    result = run_bench(tiny, sizes=(16, 24), input_size=64, runs=1, threads=1, onnx_model=onnx_model)
    assert result["backend"] == "onnxruntime"
    assert set(result["fps"]) == {"16", "24"} and all(v > 0 for v in result["fps"].values())
    assert result["macs"]["24"] > result["macs"]["16"] > 0


def test_bench_counts_adaptive_work_of_the_onnx_model_not_of_the_architecture(tiny, exported):
    """``fpliif bench --onnx`` without ``--weights`` counts with the architecture alone (random weights), whose
    adaptive decoding queries other points than the exported weights do: the ONNX run's points are reported, and
    their MACs equal what the torch model with the exported weights counts for them."""
    from fpliif.bench.inference import run_bench
    from fpliif.infer.onnx_backend import OnnxModel

    architecture = fpliif.make(TINY).eval()  # other weights: class 0 everywhere, so hardly any re-queries
    architecture.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        architecture.mlp[-1].bias[0] += 100.0
    kw = {"sizes": (96,), "input_size": 64, "runs": 1, "threads": 1, "decode": ["adaptive"]}
    own = run_bench(tiny, **kw)
    onnx = run_bench(architecture, onnx_model=OnnxModel(exported["dynamic"], threads=1), **kw)
    other = run_bench(architecture, **kw)
    assert other["points"] != own["points"]  # the case: weights-dependent points
    assert onnx["points"] == own["points"] and onnx["macs_executed"] == own["macs_executed"]


def test_adaptive_decoding_on_onnxruntime_matches_torch(tiny, exported):
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    everywhere = {"min_coarse": 8, "margin": 1.0}  # re-queries every pixel: equals dense
    torch_p = FaceParser(tiny, input_size=64, adaptive=everywhere, amp="none")
    for path in (exported["static"], exported["dynamic"], exported["single"]):
        onnx_p = FaceParser.from_onnx(path, adaptive=everywhere, decode="adaptive")
        latent = onnx_p.backend.encode(np.zeros((1, 3, 64, 64), np.float32))[0]
        assert onnx_p.backend.latent_size(latent) == (16, 16)
        for tta in (False, True):
            dense = torch_p.parse_aligned(img, size=(37, 90), return_probs=True, tta=tta)
            b = onnx_p.parse_aligned(img, size=(37, 90), return_probs=True, tta=tta)
            assert np.abs(dense.probs - b.probs).max() < 1e-4
        default = FaceParser.from_onnx(path, decode="adaptive")
        a = FaceParser(tiny, input_size=64, decode="adaptive", amp="none").parse_aligned(img, size=(37, 90))
        assert (default.parse_aligned(img, size=(37, 90)).labels == a.labels).mean() > 0.99


# ---------------------------------------------------------------------------------------------- untrusted files
def _edited(src: Path, dst: Path, **changes: str | None) -> Path:
    """A copy of the ONNX file ``src`` at ``dst`` with metadata entries changed (None: removed)."""
    import onnx

    proto = onnx.load(str(src))
    meta = {e.key: e.value for e in proto.metadata_props}
    meta.update(changes)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {k: v for k, v in meta.items() if v is not None})
    onnx.save(proto, str(dst))
    return dst


def _graph(path: Path, image_shape: list, meta: dict[str, str]) -> Path:
    """A hand-made encoder graph ``image`` -> ``cells`` (an identity) with ``meta``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["cells"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, image_shape)],
        [helper.make_tensor_value_info("cells", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, meta)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def other_exports(tmp_path_factory, exported):
    """Beside a copy of the ``static`` export: its decoder relabelled as another export's or with other classes,
    and the export of a narrower network (another latent width)."""
    d = tmp_path_factory.mktemp("onnx_pairs")
    for p in exported["static"].parent.glob("static*.onnx"):
        (d / p.name).write_bytes(p.read_bytes())
    decoder = d / "static.decoder.onnx"
    _edited(decoder, d / "relabelled.decoder.onnx", fpliif_export_id="0123456789abcdef")
    _edited(decoder, d / "classes.decoder.onnx", fpliif_classes=json.dumps([f"c{i}" for i in range(19)]))
    narrow = {**TINY["args"], "width": 4, "decoder_mlp": [8, 8]}
    export_onnx(fpliif.make({"name": "fpliif", "args": narrow}).eval(), d / "narrow.onnx", input_size=64)
    return d


HOSTILE = [  # (case, metadata changes of the static export, expected message fragment)
    ("classes_not_json", {"fpliif_classes": "[abc"}, "fpliif_classes"),
    ("classes_ints", {"fpliif_classes": "[1, 2, 3]"}, "fpliif_classes"),
    ("classes_object", {"fpliif_classes": '{"a": 1, "b": 2}'}, "fpliif_classes"),
    ("classes_count", {"fpliif_classes": '["a", "b", "c"]'}, "outputs 19 classes but the metadata fpliif_classes"),
    ("temperature_text", {"fpliif_temperature": "abc"}, "fpliif_temperature"),
    ("temperature_nan", {"fpliif_temperature": "nan"}, "fpliif_temperature"),
    ("temperature_negative", {"fpliif_temperature": "-1"}, "fpliif_temperature: expected a positive number"),
    ("input_huge", {"fpliif_input_size": "20000"}, "input_size"),
    ("input_mismatch", {"fpliif_input_size": "128"}, "fpliif_input_size 128 does not match the graph's static 64x64"),
    ("spec_not_json", {"fpliif_spec": "{bad"}, "fpliif_spec"),
    ("spec_too_deep", {"fpliif_spec": json.dumps({"name": "fpliif", "args": {"depths": [1] * 60}})}, "fpliif_spec"),
    ("decoder_narrow", {"fpliif_decoder": "narrow.decoder.onnx"}, "does not fit the encoder's output (1, 16, 16, 16)"),
    ("decoder_classes", {"fpliif_decoder": "classes.decoder.onnx"}, "lists other classes than the encoder's"),
    ("decoder_other_export", {"fpliif_decoder": "relabelled.decoder.onnx"}, "belongs to another export"),
    ("decoder_is_encoder", {"fpliif_decoder": "static.onnx"}, "expected decoder inputs 'cells' and 'coords'"),
]


@pytest.mark.parametrize("case, changes, fragment", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_onnx_metadata_is_refused_naming_the_file(other_exports, case, changes, fragment):
    path = _edited(other_exports / "static.onnx", other_exports / f"{case}.onnx", **changes)
    with pytest.raises(ValueError) as info:
        OnnxModel(path)
    text = str(info.value)
    assert fragment in text and "\n" not in text
    assert f"{case}.onnx" in text or changes.get("fpliif_decoder", "?") in text


def test_hostile_onnx_graphs_are_refused_naming_the_file(other_exports):
    meta = {"fpliif_classes": json.dumps(["a", "b"]), "fpliif_decoder": "static.decoder.onnx"}
    for shape, fragment in [
        ([1, 1, 64, 64], "graph input 'image' is tensor(float) (1, 1, 64, 64); expected tensor(float) (?, 3, ?, ?)"),
        ([1, 3, 64], "expected tensor(float) (?, 3, ?, ?)"),
        ([1, 3, 20000, 20000], "'image' is 20000x20000; expected sides in [8, 1024]"),
    ]:
        path = _graph(other_exports / "made.onnx", shape, meta)
        with pytest.raises(ValueError, match=re.escape(fragment)) as info:
            OnnxModel(path)
        assert "made.onnx" in str(info.value)
    for data in (b"", b"not an onnx file at all", b"\x08\x07" + os.urandom(200)):
        junk = other_exports / "junk.onnx"
        junk.write_bytes(data)
        with pytest.raises(ValueError, match="junk.onnx: not a loadable ONNX model") as info:
            OnnxModel(junk)
        assert "\n" not in str(info.value)


def test_static_graph_gives_the_input_size_when_the_metadata_has_none(other_exports):
    path = _edited(other_exports / "static.onnx", other_exports / "sizeless.onnx", fpliif_input_size=None)
    om = OnnxModel(path)
    assert om.input_size == 64 and om.split
    assert FaceParser.from_onnx(path).parse_aligned(np.zeros((40, 40, 3), np.uint8), size=24).labels.shape == (24, 24)
    pair = OnnxModel(other_exports / "narrow.onnx")  # with its own decoder: the export ids agree
    assert len(pair.metadata["fpliif_export_id"]) == 16
    assert pair.metadata["fpliif_export_id"] != om.metadata["fpliif_export_id"]


def test_onnx_queries_stop_at_the_deadline(exported):
    from fpliif import limits

    for path in (exported["dynamic"], exported["single"]):
        om = OnnxModel(path, chunk_size=100)
        latent = om.encode(np.random.default_rng(0).random((1, 3, 64, 64), np.float32))
        coords = pixel_centers(40, 40)  # 16 chunks
        session = om.decoder if om.split else om.session
        calls = []
        session.run = lambda *a, calls=calls, run=session.run, **k: calls.append(1) or run(*a, **k)
        expired = limits.Deadline(1.0, at=time.monotonic() - 1)
        with limits.scope(deadline=expired), pytest.raises(limits.DeadlineExceeded):
            om.query(latent, coords)
        assert calls == []
        assert om.query(latent, coords).shape == (1, 1600, om.num_classes) and len(calls) == 16


def test_service_on_onnxruntime_stops_work_at_the_deadline(exported):
    """One decode call of 65,536 queries in 128 ONNX chunks of >= 50 ms: the request's deadline stops it
    between chunks."""
    pytest.importorskip("fastapi", reason="needs the 'serve' extra")
    from fastapi.testclient import TestClient

    from fpliif.serve import ServeSettings, create_app

    parser = FaceParser.from_onnx(exported["dynamic"])
    model = parser.backend.model
    model.chunk_size = 512
    calls = []
    run = model.decoder.run
    model.decoder.run = lambda *a, **k: calls.append(1) or time.sleep(0.05) or run(*a, **k)
    image = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image, format="PNG")
    files = {"file": ("x.png", image.getvalue(), "image/png")}
    with TestClient(create_app(parser, ServeSettings(timeout=1.5, workers=1, torch_threads=0))) as client:
        assert client.post("/v1/parse?aligned=true&size=16", files=files).status_code == 200  # warm
        calls.clear()
        resp = client.post("/v1/parse?aligned=true&size=256&decode=dense", files=files)  # 128 chunks: >= 6.4 s
        assert resp.status_code == 504 and resp.json()["error"] == "timeout"
        waited = time.perf_counter()
        while client.get("/healthz").json()["busy"] and time.perf_counter() - waited < 60:
            time.sleep(0.05)
        assert 0 < len(calls) < 64  # stopped near the 1.5 s deadline (about 30 chunks), not after all 128


def test_int8_decoder_export_quantises_the_hidden_layers_of_every_ensemble_member(tiny, exported, tmp_path):
    """``export_onnx(int8=True)``: the decoder's hidden MLP layer (one in the tiny model) is a MatMulInteger in all
    4 local-ensemble members; the position part of the first layer and the class logits stay fp32 MatMuls; the
    pair loads and decodes close to the fp32 export; a single graph refuses the option."""
    import onnx

    path = export_onnx(tiny, tmp_path / "int8.onnx", input_size=64, dynamic=True, int8=True)
    ops = [n.op_type for n in onnx.load(str(path.with_name("int8.decoder.onnx"))).graph.node]
    assert ops.count("MatMulInteger") == 4 and ops.count("MatMul") == 8
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    int8, fp32 = OnnxModel(path)(x, size=40), OnnxModel(exported["dynamic"])(x, size=40)
    assert int8.shape == fp32.shape and not np.array_equal(int8, fp32)
    assert np.abs(int8 - fp32).max() < 0.05 * np.abs(fp32).max()
    assert OnnxModel(path).metadata.get("fpliif_int8")
    with pytest.raises(ValueError, match="int8: quantises the decoder graph"):
        export_onnx(tiny, tmp_path / "single.onnx", input_size=64, split=False, int8=True)


def test_bench_json_names_the_onnx_file_and_whether_it_is_int8(tiny, exported):
    from fpliif.bench.inference import run_bench
    from fpliif.infer.onnx_backend import OnnxModel

    result = run_bench(tiny, sizes=(16,), input_size=64, runs=1, threads=1, onnx_model=OnnxModel(exported["dynamic"]))
    assert result["onnx"] == str(exported["dynamic"]) and result["onnx_int8"] is False
    assert "onnx" not in run_bench(tiny, sizes=(16,), input_size=64, runs=1, threads=1)


def test_export_and_bench_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from fpliif.cli import main

    (tmp_path / "a.log").write_text("x")
    assert main(["export", "onnx", "--out", str(tmp_path / "a.log" / "m.onnx")]) == 2
    assert "a.log is a file, not a folder" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    assert main(["bench", "--json", "--sizes", "16"]) == 2
    assert "fpliif bench: error: needs PyTorch" in capsys.readouterr().err
