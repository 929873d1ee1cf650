"""``fpliif serve``: endpoints, outputs, every bad-input case, timeouts, the queue, concurrency and the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import threading
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="needs the 'serve' extra: pip install 'fpliif[serve]'")
pytest.importorskip("python_multipart", reason="needs the 'serve' extra: pip install 'fpliif[serve]'")
httpx = pytest.importorskip("httpx", reason="needs the 'serve' extra: pip install 'fpliif[serve]'")

with warnings.catch_warnings():  # starlette: "Using `httpx` with starlette.testclient is deprecated"
    warnings.filterwarnings("ignore", message="Using `httpx`")
    from fastapi.testclient import TestClient

import fpliif  # noqa: E402
from fpliif.adaptive import DEFAULT_DECODE  # noqa: E402
from fpliif.cli import main  # noqa: E402
from fpliif.infer.cli import example_image  # noqa: E402
from fpliif.infer.parser import FaceParser  # noqa: E402
from fpliif.labels import CELEBAMASK_HQ  # noqa: E402
from fpliif.serve import ServeSettings, create_app  # noqa: E402
from fpliif.serve.imaging import rle_decode, rle_encode, sniff  # noqa: E402
from fpliif.serve.testing import background_server  # noqa: E402

TINY = {
    "name": "fpliif",
    "args": {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8], "decoder_mlp": [16, 16]},
}
# Leave torch's thread count alone in tests (conftest picks it); the server would otherwise set it.
QUIET = {"torch_threads": 0}


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("serve") / "tiny.safetensors"
    fpliif.save(fpliif.make(TINY), path)
    return path


@pytest.fixture(scope="module")
def parser(weights):
    return FaceParser.from_pretrained(weights)


@pytest.fixture(scope="module")
def client(parser):
    with TestClient(create_app(parser, ServeSettings(**QUIET))) as c:
        yield c


def encode(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise(h: int = 48, w: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(small, np.ones((8, 8, 1), np.uint8))[:h, :w])


def post(client, data: bytes, ctype: str = "image/png", params: str = "", name: str = "x.png"):
    return client.post(f"/v1/parse{params}", files={"file": (name, data, ctype)})


def png_labels(content: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(content))
    assert img.format == "PNG" and img.mode == "P"
    return np.asarray(img)


def assert_error(resp, status: int, code: str | None = None, text: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body["detail"], str) and body["detail"]
    if code:
        assert body["error"] == code, body
    if text:
        assert text.lower() in body["detail"].lower(), body
    return body


def fake_png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (a decompression bomb's header), with a tiny body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class SlowParser:
    """A FaceParser that takes ``delay`` seconds longer (everything else delegated)."""

    def __init__(self, inner: FaceParser, delay: float):
        self.inner = inner
        self.delay = delay

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        time.sleep(self.delay)
        return self.inner(*args, **kwargs)

    def parse_aligned(self, *args, **kwargs):
        time.sleep(self.delay)
        return self.inner.parse_aligned(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- endpoints
def test_healthz(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["model"] == "fpliif" and body["workers"] == 1


def test_model_info(client, parser):
    body = client.get("/v1/model").json()
    assert body["name"] == "fpliif"
    assert body["classes"] == list(CELEBAMASK_HQ.classes)
    assert body["colors"] == [list(c) for c in CELEBAMASK_HQ.colors]
    assert body["params"] == parser.backend.model.num_parameters()
    assert body["version"] == fpliif.__version__
    assert body["input_size"] == 256 and body["backend"] == "torch"
    assert body["limits"]["max_upload_bytes"] == 20 * 2**20 and body["limits"]["max_pixels"] == 40_000_000
    assert body["defaults"] == {"tta": False, "decode": DEFAULT_DECODE}
    assert body["amp"] == parser.backend.amp and body["detector"] == "mtcnn"
    assert body["label_sets"][0] == "celebamask-hq" and {"lapa", "coarse", "helen"} <= set(body["label_sets"])


def test_precision_and_detector_settings_load_the_parser_so(weights):
    """``fpliif serve --amp none --detector haar``: the loaded parser runs fp32 with Haar; /v1/model says so."""
    import argparse

    from fpliif.serve.cli import add_settings_flags, settings_from_args

    p = argparse.ArgumentParser()
    add_settings_flags(p)
    settings = settings_from_args(p.parse_args(["--amp", "none", "--detector", "haar", "--torch-threads", "0"]))
    app = create_app(str(weights), settings)
    assert app.state.engine.parser.backend.amp == "none"
    with TestClient(app) as c:
        body = c.get("/v1/model").json()
        assert body["amp"] == "none" and body["detector"] == "haar"
    with pytest.raises(ValueError, match="--second-chance: is a second MTCNN pass"):
        settings_from_args(p.parse_args(["--detector", "haar", "--second-chance"]))
    with pytest.raises(SystemExit):
        p.parse_args(["--amp", "fp8"])
    with pytest.raises(ValueError, match="settings amp: apply to weights create_app loads"):
        create_app(FaceParser.from_pretrained(weights), ServeSettings(amp="none", **QUIET))


def test_openapi_docs_page_and_static(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/parse"]["post"]
    names = "size aligned format overlay rle alpha legend tta decode labels mask context feather keep_detached extend"
    assert {p["name"] for p in op["parameters"]} == set(names.split())
    assert "multipart/form-data" in op["requestBody"]["content"]
    assert {"413", "415", "422", "504"} <= set(op["responses"])
    assert "/v1/model" in spec["paths"] and "/healthz" in spec["paths"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="static/app.js"' in page.text
    js = client.get("/static/app.js")
    css = client.get("/static/style.css")
    assert js.status_code == css.status_code == 200
    # The page takes class names and colours from GET /v1/model; none is spelled out in its files.
    static = (page.text + js.text + css.text).replace(" ", "")
    for name, (r, g, b) in zip(CELEBAMASK_HQ.classes[1:], CELEBAMASK_HQ.colors[1:], strict=True):
        assert f"{r},{g},{b}" not in static and f"#{r:02x}{g:02x}{b:02x}" not in static.lower()
        assert f'"{name}"' not in static


def test_index_png_with_palette_aligned(client, parser):
    img = noise(40, 56)
    resp = post(client, encode(img), params="?aligned=true&size=48")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert resp.headers["x-fpliif-faces"] == "1" and resp.headers["cache-control"] == "no-store"
    pil = Image.open(io.BytesIO(resp.content))
    assert pil.mode == "P" and pil.size == (48, 48)
    assert pil.getpalette()[: 3 * 19] == CELEBAMASK_HQ.palette()[: 3 * 19]
    labels = np.asarray(pil)
    np.testing.assert_array_equal(labels, parser.parse_aligned(img, size=48).labels)
    # without size: the upload's own size
    assert png_labels(post(client, encode(img), params="?aligned=true").content).shape == (40, 56)


def test_json_structure_and_rle_round_trip(client, parser):
    data = example_image().read_bytes()
    resp = post(client, data, "image/jpeg", "?format=json&rle=true", name="astronaut.jpg")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == "photo" and body["size"] == [512, 512] and body["input_size"] == [512, 512]
    assert body["num_faces"] == len(body["faces"]) >= 1 and "message" not in body
    face = body["faces"][0]
    assert set(face) - {"landmarks", "angle", "context"} == {"box", "score", "crop", "class_share"}
    assert len(face["box"]) == 4
    assert len(face["landmarks"]) == 5  # the default detector (MTCNN) gives 5 landmarks
    assert body["classes"] == list(CELEBAMASK_HQ.classes)
    assert sum(body["class_share"].values()) == pytest.approx(1.0, abs=1e-4)
    assert set(body["timing_ms"]) == {"decode", "parse", "encode"}
    rle = body["rle"]
    assert rle["order"] == "row-major" and rle["size"] == [512, 512]
    rebuilt = np.zeros((512, 512), np.uint8)
    for m in rle["masks"]:
        assert sum(m["counts"]) == 512 * 512 and m["class"] == CELEBAMASK_HQ.classes[m["index"]]
        rebuilt[rle_decode(m["counts"], tuple(m["size"]))] = m["index"]
    assert len(np.unique(rebuilt)) >= 2  # the face is there
    expected = parser(Image.open(example_image())).labels
    np.testing.assert_array_equal(rebuilt, expected)
    np.testing.assert_array_equal(png_labels(post(client, data, "image/jpeg").content), expected)
    shares = {k: v for k, v in body["class_share"].items() if v > 0}
    assert {m["class"] for m in rle["masks"]} == set(shares)


@pytest.fixture
def tta_calls(monkeypatch) -> list:
    """Counts the parser's flip-TTA decodes."""
    from fpliif.infer import parser as parser_module

    calls: list = []
    real = parser_module.flip_tta_logits
    monkeypatch.setattr(parser_module, "flip_tta_logits", lambda *a: calls.append(1) or real(*a))
    return calls


def test_tta_query_parameter_and_server_default(client, parser, weights, tta_calls):
    img = noise(24, 32)
    plain = post(client, encode(img), params="?aligned=true&size=16&format=json")
    assert plain.status_code == 200 and plain.json()["tta"] is False and not tta_calls
    resp = post(client, encode(img), params="?aligned=true&size=16&tta=true")
    assert resp.status_code == 200 and tta_calls
    np.testing.assert_array_equal(png_labels(resp.content), parser.parse_aligned(img, size=16, tta=True).labels)
    tta_calls.clear()
    photo = post(client, example_image().read_bytes(), "image/jpeg", "?format=json&size=256&tta=true")
    assert photo.status_code == 200 and photo.json()["tta"] is True and photo.json()["num_faces"] >= 1 and tta_calls
    with TestClient(create_app(parser, ServeSettings(tta=True, **QUIET))) as on:
        assert on.get("/v1/model").json()["defaults"] == {"tta": True, "decode": DEFAULT_DECODE}
        tta_calls.clear()
        assert post(on, encode(img), params="?aligned=true&size=16&format=json").json()["tta"] is True and tta_calls
        tta_calls.clear()
        assert post(on, encode(img), params="?aligned=true&size=16&format=json&tta=false").json()["tta"] is False
        assert not tta_calls


def test_decode_query_parameter_and_server_default(client, parser, monkeypatch):
    from fpliif.infer import parser as parser_module

    calls: list = []
    real = parser_module.adaptive_decode
    monkeypatch.setattr(parser_module, "adaptive_decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    img = noise(40, 48)
    default = post(client, encode(img), params="?aligned=true&format=json")
    assert default.status_code == 200 and default.json()["decode"] == DEFAULT_DECODE
    calls.clear()
    dense = post(client, encode(img), params="?aligned=true&format=json&decode=dense")
    assert dense.status_code == 200 and dense.json()["decode"] == "dense" and not calls
    resp = post(client, encode(img), params="?aligned=true&decode=adaptive")
    assert resp.status_code == 200 and calls
    np.testing.assert_array_equal(png_labels(resp.content), parser.parse_aligned(img, decode="adaptive").labels)
    calls.clear()
    photo = post(client, example_image().read_bytes(), "image/jpeg", "?format=json&size=256&decode=adaptive")
    assert photo.status_code == 200 and photo.json()["decode"] == "adaptive" and photo.json()["num_faces"] >= 1
    assert calls
    with TestClient(create_app(parser, ServeSettings(decode="adaptive", **QUIET))) as on:
        assert on.get("/v1/model").json()["defaults"] == {"tta": False, "decode": "adaptive"}
        calls.clear()
        assert post(on, encode(img), params="?aligned=true&format=json").json()["decode"] == "adaptive" and calls
        calls.clear()
        assert post(on, encode(img), params="?aligned=true&format=json&decode=dense").json()["decode"] == "dense"
        assert not calls
    with pytest.raises(ValueError, match="decode"):
        ServeSettings(decode="fast")


def test_feather_query_parameter(client, parser):
    """``feather`` reaches the parser per request: the labels are the parser's with that band, and the band matters."""
    head = np.asarray(Image.open(example_image()).convert("RGB").crop((100, 0, 400, 300)).resize((160, 160)))
    got = {}
    for band in (0.0, 1.0):
        resp = post(client, encode(head), params=f"?feather={band}")
        assert resp.status_code == 200 and resp.headers["x-fpliif-faces"] == "1"
        got[band] = png_labels(resp.content)
        np.testing.assert_array_equal(got[band], parser(head, feather=band).labels)
    assert (got[0.0] != got[1.0]).any()
    with pytest.raises(ValueError, match="feather"):
        parser(head, feather=2)


def spy_parser_argument(monkeypatch, name: str) -> list:
    """The value of keyword ``name`` of every ``FaceParser.__call__`` from now on (``"default"`` when not given)."""
    seen = []
    call = FaceParser.__call__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get(name, "default"))
        return call(self, *args, **kwargs)

    monkeypatch.setattr(FaceParser, "__call__", spy)
    return seen


def test_keep_detached_query_parameter(client, parser, monkeypatch):
    """``keep_detached`` reaches the parser per request (as ``drop_detached``, negated; absent: the parser's own
    setting), and the labels are the parser's with that setting."""
    head = np.asarray(Image.open(example_image()).convert("RGB").resize((160, 160)))
    seen = spy_parser_argument(monkeypatch, "drop_detached")
    for query, drop in (("", "default"), ("?keep_detached=true", False), ("?keep_detached=false", True)):
        resp = post(client, encode(head), params=query)
        assert resp.status_code == 200, resp.text
        assert seen[-1] == drop
        want = parser(head) if drop == "default" else parser(head, drop_detached=drop)
        np.testing.assert_array_equal(png_labels(resp.content), want.labels)
    assert post(client, encode(head), params="?keep_detached=maybe").status_code == 422


def test_extend_query_parameter(client, parser, monkeypatch):
    """``extend`` reaches the parser per request (absent: the parser's own setting); not a boolean: 422."""
    head = np.asarray(Image.open(example_image()).convert("RGB").resize((160, 160)))
    seen = spy_parser_argument(monkeypatch, "extend")
    for query, want in (("", "default"), ("?extend=false", False), ("?extend=true", True)):
        assert post(client, encode(head), params=query).status_code == 200 and seen[-1] == want
    assert post(client, encode(head), params="?extend=maybe").status_code == 422


def test_overlay_png(client):
    data = encode(noise(32, 40))
    plain = post(client, data, params="?aligned=true&overlay=true&alpha=0.7")
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(plain.content))
    assert img.mode == "RGB" and img.size == (40, 32)
    legend = Image.open(io.BytesIO(post(client, data, params="?aligned=true&overlay=true&legend=true").content))
    assert legend.size[1] == 32 and legend.size[0] > 40


def test_photo_size_shrinks_and_no_face(client):
    grey = np.full((90, 120, 3), 128, np.uint8)
    resp = post(client, encode(grey, "JPEG"), "image/jpeg", "?format=json&size=60")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["size"] == [60, 45] and body["input_size"] == [120, 90]  # the upload's own size, before shrinking
    assert body["num_faces"] == 0 and body["faces"] == [] and "no face" in body["message"]
    assert body["class_share"]["background"] == 1.0
    png = post(client, encode(grey), "image/png")
    assert png.status_code == 200 and png.headers["x-fpliif-faces"] == "0"
    assert "no face" in png.headers["x-fpliif-message"]
    assert not png_labels(png.content).any()


def test_input_size_is_the_upload_as_displayed(client):
    """``input_size``: the upload's own (W, H) after EXIF orientation, in both modes, whatever ``size`` asks."""
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 x 30, displayed turned a quarter: 30 x 40
    Image.fromarray(noise(30, 40)).save(buf, "JPEG", exif=exif)
    for params in ("?format=json", "?format=json&size=20", "?aligned=true&format=json&size=16"):
        body = post(client, buf.getvalue(), "image/jpeg", params).json()
        assert body["input_size"] == [30, 40], (params, body)
    assert post(client, buf.getvalue(), "image/jpeg", "?format=json&size=20").json()["size"] == [15, 20]


def test_repeated_query_parameters_are_refused(client):
    data = encode(noise(16, 16))
    body = assert_error(post(client, data, params="?aligned=true&tta=true&tta=false"), 422, "invalid_parameter")
    assert "['tta']" in body["detail"] and "more than once" in body["detail"]
    assert_error(post(client, data, params="?labels=foo&labels=lapa"), 422, "invalid_parameter", "more than once")


def test_budget_errors_name_what_the_request_can_change(parser):
    settings = ServeSettings(max_size=64, max_points=2000, **QUIET)
    with TestClient(create_app(parser, settings)) as small:
        data = encode(noise(80, 80))  # aligned without size: 80 > max_size 64
        detail = assert_error(post(small, data, params="?aligned=true"), 413, "too_large")["detail"]
        assert "pass size=44 or less" in detail  # 44² = 1,936 <= 2,000 < 45²: allowed by both limits
        assert post(small, data, params="?aligned=true&size=44").status_code == 200
        assert_error(post(small, data, params="?aligned=true&size=45"), 422, "over_budget", "size=44 or less")
        assert_error(post(small, data, params="?aligned=true&size=32&tta=true"), 422, "over_budget", "size=31")


def test_api_docs_are_served_from_the_package(client):
    """``/docs`` and ``/redoc`` load their scripts from this server (no CDN: the service may run offline)."""
    import re

    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200 and "cdn." not in html.text
        urls = re.findall(r"(?:href|src|url)\s*[=:]\s*['\"]([^'\"]+)['\"]", html.text)
        assert any(u.endswith(".js") for u in urls) and "/openapi.json" in urls
        for u in urls:
            assert u.startswith("/") and client.get(u).status_code == 200, u


def test_unusual_but_valid_images(client):
    tiny = post(client, encode(np.zeros((1, 1, 3), np.uint8)), params="?format=json")
    assert tiny.status_code == 200 and tiny.json()["size"] == [1, 1]
    gray16 = np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 100
    resp = post(client, encode(gray16), params="?aligned=true&format=json")
    assert resp.status_code == 200 and resp.json()["size"] == [24, 24]
    rgba = np.zeros((16, 16, 4), np.uint8)
    assert post(client, encode(rgba, "WEBP"), "image/webp", "?aligned=true").status_code == 200
    # a generic declared type is fine when the bytes are an image
    assert post(client, encode(noise(16, 16), "GIF"), "application/octet-stream", "?aligned=true").status_code == 200
    for arr, ctype in ((noise(16, 16), "image/x-portable-pixmap"), (noise(16, 16)[..., 0], "")):  # as parse reads
        resp = post(client, encode(arr, "PPM"), ctype, "?aligned=true&format=json")
        assert resp.status_code == 200 and resp.json()["size"] == [16, 16], resp.text


def test_multi_frame_uploads_say_only_the_first_frame_is_parsed(client):
    """Before: an animated GIF/WebP or a multi-page TIFF was parsed from its first frame without a word (the
    CLI logs it); now the JSON answer's ``warnings`` and the PNG answer's header say so, as the CLI does."""
    frames = [Image.fromarray(noise(16, 16, seed)) for seed in range(3)]
    for fmt, ctype in (("GIF", "image/gif"), ("WEBP", "image/webp"), ("TIFF", "image/tiff")):
        buf = io.BytesIO()
        frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:])
        note = f"3 frames ({fmt}); the first is parsed"
        body = post(client, buf.getvalue(), ctype, "?aligned=true&format=json").json()
        assert body["warnings"] == [note] and body["size"] == [16, 16], body
        png = post(client, buf.getvalue(), ctype, "?aligned=true")
        assert png.status_code == 200 and png.headers["x-fpliif-warning"] == note
    still = post(client, encode(noise(16, 16), "GIF"), "image/gif", "?aligned=true&format=json")
    assert still.status_code == 200 and "warnings" not in still.json()
    assert "x-fpliif-warning" not in post(client, encode(noise(16, 16), "GIF"), "image/gif").headers


# ---------------------------------------------------------------------------------------------- bad input
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


@pytest.mark.parametrize(
    "data, ctype, status, code",
    [
        (b"hello, I am not an image", "text/plain", 415, "unsupported_media_type"),
        (PDF, "application/pdf", 415, "unsupported_media_type"),
        (PDF, "image/jpeg", 415, "unsupported_media_type"),  # lying content type: the bytes are sniffed
        (PDF, "application/octet-stream", 415, "unsupported_media_type"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", 415, "unsupported_media_type"),
        (b"", "image/jpeg", 422, "empty_upload"),
        (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "image/jpeg", 422, "undecodable_image"),
    ],
    ids=["text", "pdf", "pdf-as-jpeg", "pdf-octet-stream", "svg", "empty", "jpeg-garbage"],
)
def test_bad_uploads(client, data, ctype, status, code):
    assert_error(post(client, data, ctype), status, code)


def test_truncated_jpeg(client):
    data = encode(noise(64, 64), "JPEG", quality=90)
    body = assert_error(post(client, data[: len(data) // 2], "image/jpeg"), 422, "undecodable_image")
    assert "JPEG" in body["detail"]


def test_request_shape_errors(client):
    assert_error(client.post("/v1/parse", content=encode(noise()), headers={"content-type": "image/png"}), 415)
    assert_error(client.post("/v1/parse"), 415)
    missing = client.post("/v1/parse", files={"image": ("x.png", encode(noise()), "image/png")})
    assert_error(missing, 422, "missing_file", "'file'")
    two = client.post(
        "/v1/parse", files=[("file", ("a.png", encode(noise()), "image/png"))] * 2, params={"aligned": "true"}
    )
    assert_error(two, 422, "multiple_files")
    broken = client.post(
        "/v1/parse",
        content=b"--xyz\r\nthis is not a part header\r\n\r\n",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert broken.status_code in (400, 422) and "detail" in broken.json()
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.get("/v1/parse"), 405)


@pytest.mark.parametrize(
    "params, text",
    [
        ("?size=abc", "size"),
        ("?size=4", "size"),
        ("?size=100000", "size"),
        ("?format=gif", "format"),
        ("?aligned=maybe", "aligned"),
        ("?alpha=2", "alpha"),
        ("?format=json&overlay=true", "overlay"),
        ("?fromat=json", "fromat"),
        ("?path=/etc/passwd", "path"),
        ("?tta=maybe", "tta"),
        ("?decode=fast", "decode"),
        ("?feather=1.5", "feather"),
        ("?feather=-0.1", "feather"),
    ],
)
def test_bad_query_parameters(client, params, text):
    assert_error(post(client, encode(noise()), params=params), 422, "invalid_parameter", text)


def test_upload_size_limit(parser):
    with TestClient(create_app(parser, ServeSettings(max_upload_mb=0.01, **QUIET))) as small:
        limit = int(0.01 * 2**20)
        big = encode(np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8))
        assert len(big) > limit
        assert_error(post(small, big), 413, "upload_too_large", f"{limit:,} bytes")

        # a body streamed without Content-Length is cut off while it is read, too
        def chunks():
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
            for _ in range(10):
                yield b"\0" * 4096
            yield b"\r\n--b--\r\n"

        streamed = small.post(
            "/v1/parse", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert_error(streamed, 413, "upload_too_large")
        assert post(small, encode(noise(16, 16)), params="?aligned=true").status_code == 200


def test_pixel_limit_and_bomb(parser, client):
    with TestClient(create_app(parser, ServeSettings(max_pixels=1000, **QUIET))) as small:
        body = assert_error(post(small, encode(noise(48, 48))), 413, "too_many_pixels")
        assert "2,304" in body["detail"] and "1,000" in body["detail"]
        assert post(small, encode(noise(24, 24)), params="?aligned=true").status_code == 200
    # a header claiming 10^10 pixels is refused before anything is decoded
    body = assert_error(post(client, fake_png_header(100_000, 100_000)), 413, "too_many_pixels")
    assert "10,000,000,000 pixels" in body["detail"] and f"{ServeSettings().max_pixels:,}" in body["detail"]
    assert_error(post(client, fake_png_header(5000, 5000)), 422, "undecodable_image")  # passes the limit, no data


def test_timeout(parser):
    app = create_app(SlowParser(parser, 1.0), ServeSettings(timeout=0.2, **QUIET))
    with TestClient(app) as slow:
        t0 = time.perf_counter()
        body = assert_error(post(slow, encode(noise(16, 16)), params="?aligned=true"), 504, "timeout")
        assert time.perf_counter() - t0 < 0.9
        assert "0.2 s" in body["detail"]


def test_queue_full_and_bounded_workers(parser):
    app = create_app(SlowParser(parser, 0.4), ServeSettings(workers=1, max_queue=1, timeout=20, **QUIET))
    data = encode(noise(16, 16))

    async def fire():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            reqs = [ac.post("/v1/parse?aligned=true", files={"file": ("x.png", data, "image/png")}) for _ in range(3)]
            return await asyncio.gather(*reqs)

    codes = sorted(r.status_code for r in asyncio.run(fire()))
    assert codes == [200, 200, 503]  # one running, one waiting, one refused


# ---------------------------------------------------------------------------------------------- real server
def test_concurrent_requests_on_uvicorn(parser):
    app = create_app(parser, ServeSettings(workers=2, **QUIET))
    images = [encode(noise(40, 40, seed=s)) for s in range(4)]
    n = 24
    with background_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        assert url.startswith("http://127.0.0.1:")

        def one(i: int) -> bytes:
            resp = http.post("v1/parse?aligned=true&size=40", files={"file": ("x.png", images[i % 4], "image/png")})
            assert resp.status_code == 200, resp.text
            return resp.content

        sequential = [one(i) for i in range(4)]
        barrier = threading.Barrier(n, timeout=10)

        def fire(i: int) -> bytes:
            barrier.wait()
            return one(i)

        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(fire, range(n)))
        assert all(r == sequential[i % 4] for i, r in enumerate(results))
        health = http.get("healthz").json()
        assert health["served"] == n + 4 and health["busy"] == 0 and health["waiting"] == 0


def test_slow_upload_times_out_on_uvicorn(parser):
    """A client that stops sending mid-body gets 408 after the upload timeout and the server stays usable."""
    app = create_app(parser, ServeSettings(upload_timeout=0.5, **QUIET))
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
    with background_server(app) as url, socket.create_connection(("127.0.0.1", int(url.split(":")[2][:-1]))) as c:
        c.sendall(
            b"POST /v1/parse HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 100000\r\n\r\n" + head + b"\0" * 1000
        )
        c.settimeout(10)
        t0 = time.perf_counter()
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            data = c.recv(4096)
            if not data:
                break
            reply += data
        waited = time.perf_counter() - t0
        status, _, body = reply.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 408"), reply[:200]
        detail = json.loads(body)
        assert detail["error"] == "upload_timeout" and "0.5 s" in detail["detail"]
        assert 0.4 < waited < 5
        ok = httpx.post(url + "v1/parse?aligned=true", files={"file": ("x.png", encode(noise(16, 16)), "image/png")})
        assert ok.status_code == 200


class CheckingSlowParser(SlowParser):
    """A FaceParser whose aligned parse works for ``delay`` seconds in small steps, checking the deadline as the
    real parser does between its chunks; counts the parses started and finished."""

    def __init__(self, inner: FaceParser, delay: float):
        super().__init__(inner, delay)
        self.started = self.finished = 0

    def parse_aligned(self, *args, **kwargs):
        from fpliif.limits import check_deadline

        self.started += 1
        end = time.monotonic() + self.delay
        while time.monotonic() < end:
            check_deadline()
            time.sleep(0.01)
        self.finished += 1
        return self.inner.parse_aligned(*args, **kwargs)


def _send_and_hang_up(port: int, body: bytes, after: float) -> None:
    """POST an aligned parse of ``body`` (PNG) and close the connection ``after`` seconds later, unanswered."""
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
    payload = head + body + b"\r\n--b--\r\n"
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(
            b"POST /v1/parse?aligned=true HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        time.sleep(after)


def test_requests_whose_client_left_are_dropped_or_stopped_on_uvicorn(parser):
    """A client that hangs up: its running parse stops at the next deadline check, and a request still waiting
    for the worker never starts, so the next client is not kept waiting behind them."""
    slow = CheckingSlowParser(parser, 30.0)
    app = create_app(slow, ServeSettings(workers=1, max_queue=4, timeout=60, **QUIET))
    data = encode(noise(16, 16))
    with background_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        port = int(url.split(":")[2][:-1])
        running = threading.Thread(target=_send_and_hang_up, args=(port, data, 1.0))
        running.start()
        time.sleep(0.3)  # the first request holds the one worker
        _send_and_hang_up(port, data, 0.3)  # the second waits for it, then its client leaves too
        running.join()
        deadline = time.monotonic() + 20
        while (health := http.get("healthz").json())["busy"] or health["waiting"]:
            assert time.monotonic() < deadline, health
            time.sleep(0.05)
        assert slow.started == 1 and slow.finished == 0  # the first stopped, the second never ran
        slow.delay = 0.0
        ok = http.post("v1/parse?aligned=true", files={"file": ("x.png", data, "image/png")})
        assert ok.status_code == 200 and slow.started == 2 and slow.finished == 1


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_serve(monkeypatch, weights, capsys):
    import uvicorn

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    assert main(["serve", "--weights", str(weights), "--torch-threads", "0", "--max-upload-mb", "3"]) == 0
    assert calls["host"] == "127.0.0.1" and calls["port"] == 8000
    settings = calls["app"].state.settings
    assert settings.max_upload_bytes == 3 * 2**20 and settings.workers == 1
    assert settings.upload_timeout == ServeSettings().upload_timeout and settings.tta is False
    assert main(["serve", "--weights", str(weights), "--torch-threads", "0", "--tta"]) == 0
    state = calls["app"].state  # no --decode: the model's default (FP-LIIF: adaptive)
    assert state.settings.tta is True and state.settings.decode is None and state.engine.decode == DEFAULT_DECODE
    assert main(["serve", "--weights", str(weights), "--torch-threads", "0", "--decode", "dense"]) == 0
    assert calls["app"].state.settings.decode == "dense"
    assert main(["serve", "--weights", str(weights), "--torch-threads", "0", "--decode", "adaptive"]) == 0
    assert calls["app"].state.settings.decode == "adaptive"
    assert "http://127.0.0.1:8000/" in capsys.readouterr().err
    assert main(["serve", "--weights", str(weights), "--workers-threads", "0"]) == 2
    assert "workers" in capsys.readouterr().err
    assert main(["serve", "--weights", "no-such-weights.safetensors"]) == 2


# ---------------------------------------------------------------------------------------------- helpers
def test_rle_and_sniff_helpers():
    for mask in (np.zeros((3, 4), bool), np.ones((3, 4), bool), np.eye(4, dtype=bool), np.random.rand(7, 5) > 0.5):
        counts = rle_encode(mask)
        assert sum(counts) == mask.size
        np.testing.assert_array_equal(rle_decode(counts, mask.shape), mask)
    assert rle_encode(np.array([[1, 1, 0]], bool)) == [0, 2, 1]  # starts with a (0-long) run of zeros
    assert rle_encode(np.array([[0, 1], [1, 0]], bool)) == [1, 2, 1]  # row-major
    assert sniff(encode(noise(8, 8), "JPEG")) == "JPEG" and sniff(PDF) is None


def test_second_chance_setting_reaches_the_parser(weights):
    """``fpliif serve --second-chance`` (``ServeSettings.second_chance``) turns on the parser's checked second
    detection pass; off by default."""
    import argparse

    from fpliif.serve.cli import add_settings_flags, settings_from_args

    fresh = FaceParser.from_pretrained(weights)
    with TestClient(create_app(fresh, ServeSettings(**QUIET))):
        assert fresh.second_chance is False
    with TestClient(create_app(fresh, ServeSettings(second_chance=True, **QUIET))):
        assert fresh.second_chance is True
    p = argparse.ArgumentParser()
    add_settings_flags(p)
    assert settings_from_args(p.parse_args(["--second-chance"])).second_chance is True
    assert settings_from_args(p.parse_args([])).second_chance is False
