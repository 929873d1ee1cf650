"""Inference precision (issue 12, part 3): ``auto`` picks bf16 only on CPUs with native bf16 (faked capabilities),
and the int8 option (dynamically quantised decoder MLP) keeps the weights, restores exactly, and stays CPU-only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fpliif
from conftest import TINY_SPEC
from fpliif import precision
from fpliif.infer.torch_backend import TorchBackend
from fpliif.models import pixel_centers
from fpliif.quantize import int8_decoder, set_int8_decoder

X86_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
X86_AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
ARM_PLAIN = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n"


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return fpliif.make(TINY_SPEC).eval()


def fake_cpu(monkeypatch: pytest.MonkeyPatch, machine: str, cpuinfo: str) -> None:
    monkeypatch.setattr(precision.platform, "machine", lambda: machine)
    monkeypatch.setattr(precision, "cpu_flags", lambda: precision.parse_cpu_flags(cpuinfo))


@pytest.mark.parametrize(
    "machine, cpuinfo, expected",
    [("x86_64", X86_AVX2, "none"), ("x86_64", X86_AMX, "bf16"), ("aarch64", ARM_BF16, "bf16"),
     ("aarch64", ARM_PLAIN, "none"), ("x86_64", "", "none")],
)  # fmt: skip
def test_auto_inference_precision_follows_the_cpu(monkeypatch, machine, cpuinfo, expected):
    """The torch inference backend under ``auto``: bf16 autocast only where the (faked) CPU has native bf16; an
    AVX2-only or unreadable CPU runs fp32 (its latents stay float32)."""
    fake_cpu(monkeypatch, machine, cpuinfo)
    backend = TorchBackend(tiny(), amp="auto")
    assert backend.amp == expected
    latent = backend.encode(np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32))[0]
    assert latent.cells.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)


def test_parse_cpu_flags_and_other_devices(monkeypatch):
    assert {"avx2", "fma"} <= precision.parse_cpu_flags(X86_AVX2) and "bf16" in precision.parse_cpu_flags(ARM_BF16)
    assert precision.parse_cpu_flags("model name\t: something\n") == frozenset()
    fake_cpu(monkeypatch, "x86_64", X86_AMX)
    assert precision.native_bf16("cpu") and not precision.native_bf16("mps")  # mps: never assumed


def test_int8_decoder_quantises_the_hidden_layers_and_restores_exactly():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image = torch.rand(1, 3, 32, 32)
    coords = pixel_centers(24, 24)[None]
    with torch.inference_mode():
        grid = model.prepare(model.encode(image))
        fp32 = model.decode_prepared(grid, coords)
        with int8_decoder(model):
            int8 = model.decode_prepared(grid, coords)
        assert model.quantized_tail is None
        assert torch.equal(model.decode_prepared(grid, coords), fp32)  # restored: the fp32 decoder again
    assert not torch.equal(int8, fp32) and (int8 - fp32).abs().max() < 0.05 * fp32.abs().max()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # weights untouched


def test_int8_backend_option_and_its_errors():
    backend = TorchBackend(tiny(), amp="int8")
    assert backend.amp == "int8" and backend.autocast_dtype is None
    relu, hidden, _, last = backend.model.quantized_tail  # the tiny MLP's tail: ReLU, 16 x 16, ReLU, logits
    assert isinstance(hidden, torch.ao.nn.quantized.dynamic.Linear) and hidden.weight().dtype == torch.qint8
    assert isinstance(relu, nn.ReLU) and type(last) is nn.Linear  # class logits stay fp32
    assert "quantized_tail" not in "".join(backend.model.state_dict())  # never saved with the weights
    with pytest.raises(ValueError, match="CPU only"):
        precision.resolve_amp("int8", "cuda", inference=True)
    with pytest.raises(ValueError, match="int8 is an inference option"):
        precision.resolve_amp("int8", "cpu")  # training precisions: no int8
    with pytest.raises(ValueError, match="decoder MLP"):
        set_int8_decoder(nn.Linear(2, 2))


def test_compile_needs_a_cpp_compiler_and_an_fpliif_model(monkeypatch):
    from fpliif import compiled

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    model = tiny()
    with pytest.raises(ValueError, match="C\\+\\+ compiler"):
        compiled.compile_model(model)
    assert "query" not in vars(model)  # nothing compiled
    with pytest.raises(ValueError, match="encoder and decoder"):
        compiled.compile_model(nn.Linear(2, 2))
    monkeypatch.setattr(compiled.shutil, "which", lambda name: f"/usr/bin/{name}" if name == "clang++" else None)
    assert compiled.cpp_compiler() == "/usr/bin/clang++"


def bench_fp32_and(amp: str) -> tuple[torch.nn.Module, dict, dict]:
    """A tiny model and its dense bench results in fp32 and in ``amp`` (torch's thread count restored)."""
    from fpliif.bench.inference import run_bench

    n = torch.get_num_threads()
    try:
        model = tiny()
        kw = {"sizes": (16,), "input_size": 32, "runs": 1, "threads": 1, "decode": ["dense"]}
        return model, run_bench(model, **kw), run_bench(model, amp=amp, **kw)
    finally:
        torch.set_num_threads(n)


def test_bench_int8_counts_fp32_macs_and_restores_the_model():
    model, fp32, int8 = bench_fp32_and("int8")
    assert (fp32["amp"], int8["amp"], int8["compile"]) == ("none", "int8", False)
    assert int8["macs_executed"] == fp32["macs_executed"] and int8["points"] == fp32["points"]
    assert model.quantized_tail is None  # the int8 layers lived only for the timed runs


def test_bench_bf16_counts_the_fused_decoder_layers():
    """The bf16 decoder runs fused oneDNN linear layers on a CPU; the flop counter had no formula for them, so
    ``macs_executed`` of a dense bf16 decode came out near the encoder's alone (6.1 G against fp32's 58.8 G)."""
    _, fp32, bf16 = bench_fp32_and("bf16")
    a, b = fp32["macs_executed"]["dense"]["16"], bf16["macs_executed"]["dense"]["16"]
    assert bf16["amp"] == "bf16" and abs(b - a) <= 0.02 * a, (a, b)


@pytest.mark.slow
def test_compiled_model_matches_eager():
    """``compile_model`` (TorchInductor, dynamic shapes) on a tiny FP-LIIF: dense and adaptive logits equal eager's
    within 1e-5, at two query counts (the adaptive passes query a different number of points each)."""
    from fpliif import compiled

    reason = compiled.compile_unavailable("cpu")
    if reason is not None:
        pytest.skip(f"torch.compile cannot run here: {reason}")
    model = tiny()
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    coords = pixel_centers(24, 24)[None]

    def run() -> list[torch.Tensor]:
        with torch.inference_mode():
            grid = model.prepare(model.encode(image))
            return [model.decode_prepared(grid, coords), model.decode_prepared(grid, coords[:, :100])]

    eager = run()
    with torch.inference_mode():
        eager.append(model.decode_adaptive(model.encode(image), 24)[0])
    compiled.compile_model(model)
    out = run()
    with torch.inference_mode():
        out.append(model.decode_adaptive(model.encode(image), 24)[0])
    assert "query" in vars(model)  # the compiled decoder is the one that ran
    for a, b in zip(out, eager, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=0)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "amp, decode_threads, expected", [("bf16", "auto", 1), ("none", "auto", 1), ("bf16", 2, 2), ("none", 2, 2)]
)
def test_decoding_runs_on_the_decoder_threads_and_restores_them(two_threads, amp, decode_threads, expected):
    """``decode_threads="auto"``: decoding on a CPU with at most two torch threads runs on one (faster in the photo
    path there); an explicit count is used as given; the count is restored after."""
    backend = TorchBackend(tiny(), amp=amp, decode_threads=decode_threads)
    assert backend.decoder_threads() == expected
    with backend.decoding():
        assert torch.get_num_threads() == expected
    assert torch.get_num_threads() == 2


def test_auto_decoder_threads_keep_torchs_count_on_more_threads(monkeypatch):
    """Above :data:`ONE_DECODER_THREAD_UP_TO` threads (not measured) bf16 decoding keeps torch's count."""
    from fpliif.infer import torch_backend

    backend = TorchBackend(tiny(), amp="bf16")
    monkeypatch.setattr(torch_backend.torch, "get_num_threads", lambda: 8)
    assert backend.decoder_threads() == 8


@pytest.mark.parametrize("bad", [0, -1, 1.5, "one", True, None])
def test_bad_decode_threads_name_the_argument(bad):
    with pytest.raises(ValueError, match="decode_threads"):
        TorchBackend(tiny(), decode_threads=bad)


def test_parser_labels_do_not_depend_on_the_decoder_threads(two_threads):
    """The same labels and probabilities (up to the gemms' summation order) on one or two decoder threads."""
    from fpliif import FaceParser
    from fpliif.infer.framing import Framing

    image = np.random.default_rng(3).integers(0, 255, (90, 80, 3), dtype=np.uint8)
    box = [((20.0, 15.0, 60.0, 55.0), 0.99, None)]
    out = [
        FaceParser(tiny(), amp="bf16", decode_threads=n, framing=Framing(1.0, 0.0, 0.0), input_size=32)(
            image, boxes=box, return_probs=True
        )
        for n in (1, 2)
    ]
    np.testing.assert_allclose(out[0].probs, out[1].probs, atol=1e-3)  # bit-identical on the dev CPU (AMX)
    assert (out[0].labels == out[1].labels).mean() > 0.999 and len(np.unique(out[0].labels)) > 1
    assert torch.get_num_threads() == 2
