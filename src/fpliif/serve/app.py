"""The FastAPI application: ``POST /v1/parse``, ``GET /v1/model``, ``GET /healthz`` and the page at ``/``.

    from fpliif.serve import ServeSettings, create_app

    app = create_app("weights.safetensors", ServeSettings(max_upload_mb=5))   # or a FaceParser

The model is loaded once, by :func:`create_app`. Parses run on a small thread pool, off the event loop;
an asyncio semaphore bounds them to ``settings.workers`` at a time, and each gets
``settings.threads_per_worker()`` torch threads. A request waits at most ``settings.timeout`` seconds for a
worker plus its parse, else it is answered 504 (the parse itself cannot be interrupted: it finishes in the
background and only then frees its worker).

Every error is JSON ``{"error": <code>, "detail": <message>}`` with a 4xx/5xx status; see
:data:`PARSE_DOC` for the parameters and status codes of ``POST /v1/parse``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .imaging import ApiError, decode_image, index_png, open_upload, rgb_png, rle_masks
from .settings import ServeSettings
from .upload import FIELD, read_upload

log = logging.getLogger("fpliif.serve")

STATIC_DIR = Path(__file__).parent / "static"
PARSE_PARAMS = ("size", "aligned", "format", "overlay", "rle", "alpha", "legend", "tta", "decode")
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)

PARSE_DOC = f"""Parse the face(s) in an uploaded image.

Send the image as multipart form field `{FIELD}` (JPEG, PNG, WebP, GIF, BMP or TIFF), e.g.
`curl -F {FIELD}=@photo.jpg 'http://127.0.0.1:8000/v1/parse?format=json'`.

* `aligned=false` (default): a photo. Faces are detected, parsed and pasted back; pixels outside every face
  are background. A photo without faces gives 200 with zero faces and a `message`.
  `size`: if given, the photo is first shrunk (never enlarged) so that its longer side is at most `size`.
* `aligned=true`: the upload is one aligned face crop (CelebAMask-HQ framing: whole head, some neck); no
  detection. `size`: the output is `size` x `size` pixels (default: the upload's own size); the implicit
  decoder is queried at the output's pixel centres, so any resolution works.
* `tta=true`: flip test-time augmentation: each face crop is parsed as is and mirrored, and the two
  probability maps are averaged (left/right classes swapped back); about twice the parse time. Default:
  the server's setting (`fpliif serve --tta`; `GET /v1/model` shows it under `defaults`).
* `decode=dense` decodes every output pixel; `decode=adaptive` decodes a coarse grid and then re-queries the
  implicit decoder only where the prediction is uncertain (near part boundaries), refining coarse to fine:
  much less work, labels almost always identical. Default: the server's setting (`fpliif serve --decode`).

Output (`format`, `overlay`):

* `format=png` (default): an 8-bit index PNG, pixel value = class index (see `GET /v1/model`), with the
  class palette embedded. Headers `X-Fpliif-Faces` (face count) and, without faces, `X-Fpliif-Message`.
* `overlay=true` (with `format=png`): an RGB PNG of the image with the class colours blended in (`alpha`),
  face boxes outlined, and a legend panel if `legend=true`.
* `format=json`: `{{"mode", "size": [W, H], "input_size": [W, H], "num_faces", "faces": [{{"box", "score",
  "crop", "class_share"}}], "class_share", "classes", "tta", "decode", "message"?, "rle"?, "timing_ms"}}`. Boxes are in
  the pixels of the returned label map (`size`); `class_share` values are pixel fractions per class.
  `rle=true` adds `"rle": {{"size": [H, W], "order": "row-major", "masks": [{{"index", "class", "size",
  "counts"}}]}}`, one mask per class present: COCO-style *uncompressed* RLE, but scanned **row-major**
  (x fastest; COCO is column-major). `counts` alternates runs of 0 and 1 starting with 0s (a leading 0
  when the first pixel is inside) and sums to H*W.

Errors (JSON `{{"error", "detail"}}`): 400 malformed multipart body; 408 the upload did not arrive
within the server's upload timeout; 413 upload too large or too many pixels; 415 not multipart, or
the file is not a supported image (declared type and content are both checked); 422 empty/corrupt
image, missing `{FIELD}` field, bad or unknown query parameters; 503 too many requests waiting; 504 the
parse did not finish within the server's timeout.
"""


class ErrorBody(BaseModel):
    error: str
    detail: str


def _error_responses() -> dict[int | str, dict[str, Any]]:
    reasons = {
        400: "malformed multipart body",
        408: "the upload did not arrive within the server's upload timeout",
        413: "upload too large, or too many pixels",
        415: "not multipart/form-data, or not a supported image type",
        422: "empty or undecodable image, missing 'file' field, invalid query parameters",
        503: "too many requests waiting for a worker",
        504: "the parse did not finish within the server's timeout",
    }
    return {code: {"model": ErrorBody, "description": text} for code, text in reasons.items()}


def _is_parser(obj: Any) -> bool:
    return hasattr(obj, "parse_aligned") and hasattr(obj, "label_set") and callable(obj)


def load_parser(weights: str | Path | None) -> tuple[Any, str]:
    """FaceParser for a bundled name / file path / None (default); and the weights' name (file stem)."""
    from ..infer.parser import FaceParser
    from ..pretrained import resolve_weights

    path = resolve_weights(weights)
    return FaceParser.from_pretrained(path), path.stem


def model_info(parser: Any, weights_name: str | None) -> dict[str, Any]:
    """Name, weights, classes, colours, parameter count, versions and input size of the served model."""
    backend = getattr(parser, "backend", None)
    model = getattr(backend, "model", None)
    spec = getattr(model, "spec", None) or {}
    params = None
    if hasattr(model, "num_parameters"):
        params = int(model.num_parameters())
    elif hasattr(model, "parameters"):
        params = int(sum(p.numel() for p in model.parameters()))
    meta = getattr(model, "weights_metadata", None) or {}
    ls = parser.label_set
    return {
        "name": spec.get("name") if isinstance(spec, dict) and spec.get("name") else type(model).__name__,
        "weights": weights_name,
        "backend": getattr(backend, "name", None),
        "version": __version__,
        "weights_format": meta.get("fpliif_format"),
        "label_set": ls.name,
        "num_classes": ls.num_classes,
        "classes": list(ls.classes),
        "colors": [list(map(int, c)) for c in ls.colors],
        "params": params,
        "input_size": int(getattr(parser, "input_size", 0)) or None,
        "temperature": getattr(backend, "temperature", None),
    }


@dataclass
class ParseOptions:
    aligned: bool
    size: int | None
    fmt: str
    overlay: bool
    rle: bool
    alpha: float
    legend: bool
    tta: bool = False
    decode: str = "dense"


@dataclass
class ParseOutput:
    body: bytes | None
    media_type: str
    payload: dict[str, Any] | None
    faces: int
    message: str | None


class Engine:
    """The loaded parser, its worker threads and the concurrency gate."""

    def __init__(self, parser: Any, settings: ServeSettings, weights_name: str | None = None):
        self.parser = parser
        self.settings = settings
        self.info = model_info(parser, weights_name)
        self.threads = settings.threads_per_worker()
        self.busy = 0  # parses running now
        self.admitted = 0  # requests waiting for a worker or running
        self.served = 0
        self._lock = threading.Lock()
        self._detect_lock = threading.Lock()  # OpenCV cascades are not safe to share between threads
        self._executor: ThreadPoolExecutor | None = None
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self._set_threads()

    # ------------------------------------------------------------------------------------------ resources
    def _set_threads(self) -> None:
        if self.threads and self.info["backend"] == "torch":
            import torch

            torch.set_num_threads(self.threads)

    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.settings.workers, thread_name_prefix="fpliif-parse", initializer=self._set_threads
            )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _semaphore(self, loop: asyncio.AbstractEventLoop) -> asyncio.Semaphore:
        # One gate per event loop (a server has one; test clients may start several in turn).
        if self._sem is None or self._sem_loop is not loop:
            self._sem = asyncio.Semaphore(self.settings.workers)
            self._sem_loop = loop
        return self._sem

    # ------------------------------------------------------------------------------------------ running
    async def run(self, fn: Any) -> Any:
        """Run ``fn()`` on a worker thread: at most ``workers`` at once, 503 if ``max_queue`` requests are
        already waiting, 504 if waiting plus running takes longer than the timeout."""
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.timeout
        sem = self._semaphore(loop)
        with self._lock:
            if self.admitted >= s.workers + s.max_queue:
                raise ApiError(
                    503, "busy", f"server busy: {self.admitted - self.busy} requests are already waiting; retry later"
                )
            self.admitted += 1
        try:
            await asyncio.wait_for(sem.acquire(), timeout=s.timeout)
        except BaseException as e:
            self._leave()
            if isinstance(e, asyncio.TimeoutError):
                raise ApiError(
                    504, "timeout", f"no worker became free within the server's {s.timeout:g} s timeout; retry later"
                ) from None
            raise
        try:
            fut = loop.run_in_executor(self.executor(), self._counted, fn)
        except BaseException:
            self._leave()
            sem.release()
            raise
        fut.add_done_callback(lambda _: sem.release())
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout=max(0.001, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise ApiError(
                504,
                "timeout",
                f"parsing took longer than the server's {s.timeout:g} s timeout; "
                "try a smaller image or a smaller 'size'",
            ) from None

    @property
    def waiting(self) -> int:
        """Requests admitted but not yet running."""
        return max(0, self.admitted - self.busy)

    def _leave(self) -> None:
        with self._lock:
            self.admitted -= 1

    def _counted(self, fn: Any) -> Any:
        with self._lock:
            self.busy += 1
        try:
            return fn()
        finally:
            with self._lock:
                self.busy -= 1
                self.admitted -= 1
                self.served += 1

    def parse(self, img: Any, opts: ParseOptions) -> ParseOutput:
        """Decode, parse and encode one upload (runs on a worker thread)."""
        t0 = time.perf_counter()
        rgb = decode_image(img, max_side=None if opts.aligned else opts.size)
        t1 = time.perf_counter()
        if opts.aligned:
            result = self.parser.parse_aligned(rgb, size=opts.size, tta=opts.tta, decode=opts.decode)
        else:
            with self._detect_lock:
                dets = self.parser.detect(rgb)
            result = self.parser(rgb, boxes=dets, tta=opts.tta, decode=opts.decode)
        t2 = time.perf_counter()
        message = result.message
        faces = len(result.faces)
        if opts.overlay:
            body = rgb_png(result.overlay(opts.alpha, legend=opts.legend))
            return ParseOutput(body, "image/png", None, faces, message)
        if opts.fmt == "png":
            return ParseOutput(index_png(result.labels, self.parser.label_set), "image/png", None, faces, message)
        w, h = result.size
        payload: dict[str, Any] = {
            "mode": "aligned" if opts.aligned else "photo",
            "size": [w, h],
            "input_size": [int(rgb.shape[1]), int(rgb.shape[0])],
            "num_faces": faces,
            "faces": [f.to_dict() for f in result.faces],
            "class_share": {k: round(v, 6) for k, v in result.class_share().items()},
            "classes": list(result.classes),
            "tta": opts.tta,
            "decode": opts.decode,
        }
        if message:
            payload["message"] = message
        if opts.rle:
            payload["rle"] = rle_masks(result.labels, tuple(result.classes))
        t3 = time.perf_counter()
        payload["timing_ms"] = {
            "decode": round((t1 - t0) * 1000, 1),
            "parse": round((t2 - t1) * 1000, 1),
            "encode": round((t3 - t2) * 1000, 1),
        }
        return ParseOutput(None, "application/json", payload, faces, message)


# ---------------------------------------------------------------------------------------------- the app
class _SecurityHeaders:
    """Pure ASGI middleware: ``nosniff`` and ``no-referrer`` on every response."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status, headers=headers)


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors:
        loc = [str(v) for v in e.get("loc", ()) if v not in ("query", "body", "path")]
        parts.append(f"{'.'.join(loc) or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(parser_or_weights: Any = None, settings: ServeSettings | None = None) -> FastAPI:
    """The web app for a :class:`~fpliif.FaceParser` (or weights: bundled name, file path, None = default).

    The model is loaded here, once. ``settings``: limits and threads (:class:`ServeSettings`).
    """
    settings = settings or ServeSettings()
    if _is_parser(parser_or_weights):
        parser, weights_name = parser_or_weights, None
    else:
        parser, weights_name = load_parser(parser_or_weights)
    engine = Engine(parser, settings, weights_name)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        engine.close()

    app = FastAPI(
        title="fpliif face parsing",
        version=__version__,
        description="FP-LIIF face parsing as a web service. The page at `/` is a small client for it.",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.add_middleware(_SecurityHeaders)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return _error(422, "invalid_parameter", _validation_detail(exc.errors()), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))

    @app.get("/healthz", summary="Liveness and load")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": engine.info["name"],
            "workers": settings.workers,
            "busy": engine.busy,
            "waiting": engine.waiting,
            "served": engine.served,
        }

    @app.get("/v1/model", summary="The served model: classes, colours, size, limits")
    async def model() -> dict[str, Any]:
        return {
            **engine.info,
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels,
                "max_size": settings.max_size,
                "timeout_s": settings.timeout,
                "upload_timeout_s": settings.upload_timeout,
                "workers": settings.workers,
            },
            "defaults": {"tta": settings.tta, "decode": settings.decode},
        }

    @app.post(
        "/v1/parse",
        summary="Parse the faces in an uploaded image",
        description=PARSE_DOC,
        response_class=Response,
        responses={
            200: {
                "description": "index PNG, overlay PNG or JSON (see the description)",
                "content": {
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {"type": "object"}},
                },
            },
            **_error_responses(),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": [FIELD],
                            "properties": {FIELD: {"type": "string", "format": "binary", "description": "the image"}},
                        }
                    }
                },
            }
        },
    )
    async def parse(
        request: Request,
        size: int | None = Query(
            None,
            ge=8,
            le=settings.max_size,
            description="aligned=true: output side in pixels (default: the upload's size); "
            "aligned=false: shrink the photo so its longer side is at most this",
        ),
        aligned: bool = Query(False, description="true: the upload is an aligned face crop (no detection)"),
        fmt: Literal["png", "json"] = Query("png", alias="format", description="png (label map) or json"),
        overlay: bool = Query(False, description="return the colour overlay as an RGB PNG (format=png)"),
        rle: bool = Query(False, description="format=json: add per-class row-major RLE masks"),
        alpha: float = Query(0.5, ge=0.0, le=1.0, description="overlay=true: opacity of the colours"),
        legend: bool = Query(False, description="overlay=true: add a legend panel on the right"),
        tta: bool | None = Query(
            None,
            description="flip test-time augmentation: also parse the mirrored crop and average (about 2x the "
            "time; default: the server's setting)",
        ),
        decode: Literal["dense", "adaptive"] | None = Query(
            None,
            description="dense: decode every pixel; adaptive: coarse to fine, re-querying the decoder only where "
            "the prediction is uncertain (default: the server's setting)",
        ),
    ) -> Response:
        unknown = sorted(set(request.query_params) - set(PARSE_PARAMS))
        if unknown:
            raise ApiError(
                422, "invalid_parameter", f"unknown query parameter(s) {unknown}; known: {list(PARSE_PARAMS)}"
            )
        if overlay and fmt != "png":
            raise ApiError(422, "invalid_parameter", "overlay=true returns a PNG: use it with format=png")
        if rle and fmt != "json":
            raise ApiError(422, "invalid_parameter", "rle=true adds masks to the JSON: use it with format=json")
        opts = ParseOptions(
            aligned,
            size,
            fmt,
            overlay,
            rle,
            alpha,
            legend,
            settings.tta if tta is None else tta,
            settings.decode if decode is None else decode,
        )
        upload = await read_upload(
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            request.stream(),
            settings.max_upload_bytes,
            settings.upload_timeout,
        )
        img = open_upload(upload.data, upload.content_type, settings.max_pixels)
        out: ParseOutput = await engine.run(lambda: engine.parse(img, opts))
        headers = {"Cache-Control": "no-store", "X-Fpliif-Faces": str(out.faces)}
        if out.message:
            headers["X-Fpliif-Message"] = out.message.encode("ascii", "replace").decode("ascii")
        if out.payload is not None:
            return JSONResponse(out.payload, headers=headers)
        headers["Content-Disposition"] = 'inline; filename="{}.png"'.format("overlay" if overlay else "labels")
        return Response(out.body, media_type=out.media_type, headers=headers)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
