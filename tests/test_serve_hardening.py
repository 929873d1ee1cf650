"""``fpliif serve`` under hostile but fair use (issue 16): deadlines that stop the work, work budgets checked
before it starts, implied sizes, HEAD / 405 / ``Allow``, JSON for every error, and the header-phase timeout."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="needs the 'serve' extra: pip install 'fpliif[serve]'")
pytest.importorskip("python_multipart", reason="needs the 'serve' extra: pip install 'fpliif[serve]'")
httpx = pytest.importorskip("httpx", reason="needs the 'serve' extra: pip install 'fpliif[serve]'")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx`")
    from fastapi.testclient import TestClient

import fpliif  # noqa: E402
from fpliif.infer.parser import FaceParser  # noqa: E402
from fpliif.serve import ServeSettings, create_app  # noqa: E402
from fpliif.serve.testing import background_server  # noqa: E402

TINY = {"name": "fpliif", "args": {"width": 8, "depths": [1, 1, 1], "reduce_mlp": [16, 8], "decoder_mlp": [16, 16]}}
QUIET = {"torch_threads": 0}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hardening") / "tiny.safetensors"
    fpliif.save(fpliif.make(TINY), path)
    return path


def png(h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def post(client, data: bytes, params: str = ""):
    return client.post(f"/v1/parse{params}", files={"file": ("x.png", data, "image/png")})


def assert_json_error(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text[:300]
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body["detail"], str) and body["detail"] and isinstance(body["error"], str)
    if code:
        assert body["error"] == code, body
    return body


class CountingDecode:
    def __init__(self, decode, delay: float = 0.0):
        self.decode, self.delay, self.calls = decode, delay, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return self.decode(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- work
def test_timed_out_work_stops_and_frees_the_worker(weights):
    """The starving request of the issue: after its 504 the worker is free at once for the next request."""
    parser = FaceParser.from_pretrained(weights, max_queries=512)
    spy = CountingDecode(parser.backend.decode, delay=0.05)
    parser.backend.decode = spy
    # a timeout long enough for the small follow-up request on a loaded machine (0.4 s was not)
    app = create_app(parser, ServeSettings(timeout=1.5, workers=1, **QUIET))
    with TestClient(app) as client:
        slow = post(client, png(32, 32), "?aligned=true&size=256")  # 128 chunks of >= 50 ms: >= 6.4 s of work
        assert_json_error(slow, 504, "timeout")
        waited = time.perf_counter()
        while client.get("/healthz").json()["busy"] and time.perf_counter() - waited < 60:
            time.sleep(0.05)
        stopped_at = spy.calls
        assert stopped_at < 40  # the worker stopped at the deadline (at most 30 chunks), not after all 128
        assert post(client, png(16, 16), "?aligned=true&size=16").status_code == 200
        assert spy.calls == stopped_at + 1  # the next request ran at once: nothing of the first was left running


def test_work_budget_is_checked_before_the_work(weights):
    parser = FaceParser.from_pretrained(weights, detector=lambda img: [((4, 4, 44, 44), 0.9)] * 5)
    spy = CountingDecode(parser.backend.decode)
    parser.backend.decode = spy
    app = create_app(parser, ServeSettings(max_points=10_000, max_size=512, **QUIET))
    with TestClient(app) as client:
        body = assert_json_error(post(client, png(32, 32), "?aligned=true&size=200"), 422, "over_budget")
        assert "40,000" in body["detail"] and "10,000" in body["detail"] and "--max-points" in body["detail"]
        body = assert_json_error(post(client, png(120, 120), "?aligned=true"), 413, "over_budget")
        assert "120x120" in body["detail"]
        assert_json_error(post(client, png(32, 32), "?aligned=true&size=80&tta=true"), 422, "over_budget")
        assert spy.calls == 0  # refused before any decoding
        body = assert_json_error(post(client, png(60, 60)), 413, "over_budget")  # 5 detected faces
        assert "5 face(s)" in body["detail"] and spy.calls == 0
        assert post(client, png(32, 32), "?aligned=true&size=80").status_code == 200
        assert client.get("/v1/model").json()["limits"]["max_points"] == 10_000


def test_implied_aligned_size_obeys_max_size(weights):
    app = create_app(FaceParser.from_pretrained(weights), ServeSettings(max_size=64, **QUIET))
    with TestClient(app) as client:
        body = assert_json_error(post(client, png(80, 100), "?aligned=true"), 413, "too_large")
        assert "100x80" in body["detail"] and "64" in body["detail"]
        assert post(client, png(80, 100), "?aligned=true&size=64").status_code == 200
        assert post(client, png(64, 40), "?aligned=true").status_code == 200
        assert_json_error(post(client, png(32, 32), "?aligned=true&size=65"), 422, "invalid_parameter")


# ---------------------------------------------------------------------------------------------- HTTP details
def test_head_allow_and_405s(weights):
    app = create_app(FaceParser.from_pretrained(weights), ServeSettings(**QUIET))
    with TestClient(app) as client:
        for path in ("/healthz", "/v1/model", "/", "/openapi.json", "/static/app.js"):
            get, head = client.get(path), client.head(path)
            assert get.status_code == 200 and head.status_code == 200, path
            assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
        for method, path, allow in [
            ("GET", "/v1/parse", "POST"),
            ("HEAD", "/v1/parse", "POST"),
            ("PUT", "/v1/parse", "POST"),
            ("POST", "/healthz", "GET, HEAD"),
            ("DELETE", "/v1/model", "GET, HEAD"),
            ("POST", "/static/app.js", "GET, HEAD"),
        ]:
            resp = client.request(method, path)
            assert resp.status_code == 405 and resp.headers.get("allow") == allow, (method, path, resp.headers)
            if method != "HEAD":
                assert_json_error(resp, 405, "method_not_allowed")


def test_rle_with_png_is_accepted_as_the_schema_says(weights):
    app = create_app(FaceParser.from_pretrained(weights), ServeSettings(**QUIET))
    with TestClient(app) as client:
        schema = client.get("/openapi.json").json()
        params = {p["name"]: p for p in schema["paths"]["/v1/parse"]["post"]["parameters"]}
        assert "format" in params and "rle" in params and "ignored" in params["rle"]["description"]
        plain = post(client, png(24, 24), "?aligned=true")
        with_rle = post(client, png(24, 24), "?aligned=true&rle=true&format=png")
        assert with_rle.status_code == 200 and with_rle.content == plain.content


def test_no_exception_reaches_the_client_without_json(weights, monkeypatch):
    class Broken(FaceParser):
        def parse_aligned(self, *args, **kwargs):
            raise RuntimeError("boom")

        def __call__(self, *args, **kwargs):
            raise ValueError("photo: something about the input")

    app = create_app(Broken(fpliif.load(weights)), ServeSettings(**QUIET))
    with TestClient(app) as client:
        body = assert_json_error(post(client, png(24, 24), "?aligned=true"), 500, "internal_error")
        assert "boom" not in body["detail"]  # internals are logged, not sent
        assert_json_error(post(client, png(24, 24)), 422, "unprocessable_image")
        import fpliif.serve.routes as routes

        monkeypatch.setattr(routes, "open_upload", lambda *a: {}["no such key"])  # outside the engine
        assert_json_error(post(client, png(24, 24)), 500, "internal_error")


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def _read_reply(sock: socket.socket, limit: float) -> bytes:
    sock.settimeout(limit)
    data = b""
    try:
        while True:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _read_response(sock: socket.socket, limit: float = 10) -> bytes:
    """One whole HTTP response (head + Content-Length body) from a kept-alive connection."""
    sock.settimeout(limit)
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            return data
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    fields = (line.partition(b":") for line in head.split(b"\r\n")[1:])
    length = next(int(v) for k, _, v in fields if k.strip().lower() == b"content-length")
    while len(body) < length:
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return head + b"\r\n\r\n" + body


def test_errors_keep_the_connection_on_uvicorn(weights):
    class Broken(FaceParser):
        def parse_aligned(self, *args, **kwargs):
            raise RuntimeError("boom")

    app = create_app(Broken(fpliif.load(weights)), ServeSettings(**QUIET))
    body = png(16, 16)
    multipart = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
        + body
        + b"\r\n--b--\r\n"
    )
    request = (
        b"POST /v1/parse?aligned=true HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: " + str(len(multipart)).encode() + b"\r\n\r\n" + multipart
    )
    with background_server(app) as url, socket.create_connection(("127.0.0.1", _port(url))) as sock:
        sock.sendall(request)
        first = _read_response(sock)
        assert first.startswith(b"HTTP/1.1 500") and b"application/json" in first and b"internal_error" in first
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection is still usable
        second = _read_response(sock)
        assert second.startswith(b"HTTP/1.1 200"), second[:100]


def test_slow_request_head_is_cut_off(weights):
    """Slowloris: one header line every 0.1 s must not hold a connection past the header timeout."""
    app = create_app(FaceParser.from_pretrained(weights), ServeSettings(header_timeout=0.5, **QUIET))
    with background_server(app) as url:
        port = _port(url)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            t0 = time.perf_counter()
            closed = threading.Event()

            def trickle():
                for i in range(200):  # 20 s of header lines unless the server hangs up
                    if closed.is_set():
                        return
                    try:
                        sock.sendall(b"X-Slow-%d: 1\r\n" % i)
                    except OSError:
                        return
                    time.sleep(0.1)

            sender = threading.Thread(target=trickle, daemon=True)
            sender.start()
            reply = _read_reply(sock, 25)
            closed.set()
            waited = time.perf_counter() - t0
            sender.join(5)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"] == "header_timeout"
        assert 0.4 < waited < 15  # cut off after the 0.5 s header timeout, long before the 20 s of trickling
        with socket.create_connection(("127.0.0.1", port)) as idle:  # a connection that sends nothing
            assert _read_reply(idle, 25).startswith(b"HTTP/1.1 408")
        with socket.create_connection(("127.0.0.1", port)) as sock:  # normal keep-alive use is unaffected
            for _ in range(2):
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _read_response(sock, 5).startswith(b"HTTP/1.1 200")
                time.sleep(0.6)  # longer than the header timeout, shorter than keep-alive: no 408 between requests


def test_cli_serve_passes_the_limits_and_the_protocol(weights, monkeypatch, capsys):
    import uvicorn

    from fpliif.cli import main
    from fpliif.serve.protocol import HeaderTimeoutProtocol

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    argv = ["serve", "--weights", str(weights), "--torch-threads", "0", "--max-points", "1234", "--header-timeout", "3"]
    assert main(argv) == 0
    settings = calls["app"].state.settings
    assert settings.max_points == 1234 and settings.header_timeout == 3
    assert issubclass(calls["http"], HeaderTimeoutProtocol) and calls["http"].header_timeout == 3
    monkeypatch.setenv("FPLIIF_MAX_PIXELS", "5000")
    assert main(["serve", "--weights", str(weights), "--torch-threads", "0"]) == 0
    assert calls["app"].state.settings.max_pixels == 5000  # the limit shared with fpliif parse and FaceParser
    monkeypatch.setenv("FPLIIF_MAX_PIXELS", "many")
    assert main(["serve", "--weights", str(weights)]) == 2
    assert "FPLIIF_MAX_PIXELS" in capsys.readouterr().err
    assert main(["serve", "--weights", str(weights), "--max-points", "0"]) == 2
