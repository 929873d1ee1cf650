"""FaceParser, ``fpliif parse`` and the service with dense models (SegFace, STN-iCNN; issue 13): their logits at
the input size, resampled bilinearly at the output pixels; dense decoding by default; adaptive decoding (it needs
an implicit decoder) refused with a clear error. Tiny untrained weights, 32 px input."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fpliif.cli import main
from fpliif.infer.geometry import model_input
from fpliif.infer.parser import FaceParser
from fpliif.infer.tta import flip_channels
from fpliif.models import make
from fpliif.models.checkpoint import save

DENSE = {
    "segface_mnv3": {"width_mult": 0.1, "dim": 16, "depth": 1, "heads": 2, "mlp_dim": 16},
    "stn_icnn": {"coarse_size": 16, "patch_size": 9, "window": 0.3, "widths": [4, 4, 4, 4], "interlinks": 1},
}
INPUT = 32


@pytest.fixture(scope="module", params=sorted(DENSE))
def weights(request, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = make({"name": request.param, "args": DENSE[request.param]})
    path = tmp_path_factory.mktemp("dense") / f"{request.param}.safetensors"
    return save(model, path, metadata={"input_size": str(INPUT)})


@pytest.fixture(scope="module")
def parser(weights) -> FaceParser:
    return FaceParser.from_pretrained(weights, amp="none")  # the fp32 reference below


def crop(seed: int = 0, side: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def model_probs(parser: FaceParser, img: np.ndarray, size: int, mirrored: bool = False) -> torch.Tensor:
    """(C, size, size) softmax of the model's input-size logits, resampled bilinearly (the reference)."""
    x = torch.from_numpy(model_input(img, (INPUT, INPUT)))[None]
    x = x.flip(-1) if mirrored else x
    with torch.no_grad():
        logits = parser.model(x)
    logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    p = torch.softmax(logits[0] / parser.model.temperature, dim=0)
    return p.flip(-1)[list(flip_channels(parser.label_set))] if mirrored else p


@pytest.mark.parametrize("size", [INPUT, 48])
def test_aligned_labels_are_the_models_logits_resampled(parser, size):
    assert not parser.implicit and parser.decode == "dense" and parser.input_size == INPUT
    result = parser.parse_aligned(crop(), size=size, return_probs=True)
    expected = model_probs(parser, crop(), size).numpy()
    np.testing.assert_allclose(result.probs, expected, atol=1e-5)
    assert result.labels.shape == (size, size)


def test_flip_tta_averages_the_mirrored_prediction(parser):
    result = parser.parse_aligned(crop(1), size=INPUT, return_probs=True, tta=True)
    expected = (model_probs(parser, crop(1), INPUT) + model_probs(parser, crop(1), INPUT, mirrored=True)) / 2
    np.testing.assert_allclose(result.probs, expected.numpy(), atol=1e-5)


def test_photos_parse_with_given_boxes(parser):
    photo = crop(2, side=120)
    result = parser(photo, boxes=[[30, 30, 90, 90]])
    assert result.labels.shape == (120, 120) and len(result.faces) == 1
    assert parser.points_decoded > 0


def test_adaptive_decoding_needs_an_implicit_model(parser, weights):
    name = parser.model.spec["name"]
    with pytest.raises(ValueError, match=f"decode: 'adaptive' .*implicit.*'{name}' is a dense model"):
        parser.parse_aligned(crop(), decode="adaptive")
    with pytest.raises(ValueError, match="dense model"):
        parser(crop(), boxes=[[0, 0, 40, 40]], decode="adaptive")
    with pytest.raises(ValueError, match="dense model"):
        FaceParser.from_pretrained(weights, decode="adaptive")


def test_cli_parse_dense_model(weights, tmp_path, capsys):
    Image.fromarray(crop(3)).save(tmp_path / "crop.png")
    argv = ["parse", str(tmp_path / "crop.png"), "--out", str(tmp_path / "out"), "--weights", str(weights)]
    assert main([*argv, "--aligned", "--size", "24", "--format", "npy", "--quiet"]) == 0
    expected = FaceParser.from_pretrained(weights).parse_aligned(crop(3), size=24).labels
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "crop_labels.npy"), expected)
    assert main([*argv, "--aligned", "--decode", "adaptive", "--overwrite"]) == 2
    assert "dense model" in capsys.readouterr().err


def test_service_serves_a_dense_model(parser):
    pytest.importorskip("fastapi")
    pytest.importorskip("python_multipart")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx`")
        from fastapi.testclient import TestClient

    from fpliif.serve import ServeSettings, create_app

    buf = io.BytesIO()
    Image.fromarray(crop(4)).save(buf, format="PNG")
    files = {"file": ("x.png", buf.getvalue(), "image/png")}
    with TestClient(create_app(parser, ServeSettings(torch_threads=0))) as client:
        assert client.get("/v1/model").json()["defaults"]["decode"] == "dense"
        ok = client.post("/v1/parse?aligned=true&format=json", files=files)
        assert ok.status_code == 200 and ok.json()["decode"] == "dense"
        refused = client.post("/v1/parse?aligned=true&decode=adaptive", files=files)
        assert refused.status_code == 422 and "dense" in refused.json()["detail"]
    with pytest.raises(ValueError, match="decode=adaptive"):
        create_app(parser, ServeSettings(torch_threads=0, decode="adaptive"))
