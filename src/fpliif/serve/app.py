"""The FastAPI application: ``POST /v1/parse``, ``GET /v1/model``, ``GET /healthz`` and the page at ``/``.

    from fpliif.serve import ServeSettings, create_app

    app = create_app("weights.safetensors", ServeSettings(max_upload_mb=5))   # or a FaceParser

The model is loaded once, by :func:`create_app`. Parses run on a small thread pool, off the event loop;
an asyncio semaphore bounds them to ``settings.workers`` at a time, and each gets
``settings.threads_per_worker()`` torch threads. A request waits at most ``settings.timeout`` seconds for a
worker plus its parse, else it is answered 504; the parse runs under the same deadline
(:func:`fpliif.limits.scope`) and stops at the next decode chunk or face once it has passed, freeing its
worker. The cost of a request is bounded before the work starts: output sizes by ``max_size`` and
``max_pixels``, decoder queries (output pixels x faces, x2 with TTA) by ``max_points``.

Connections: :mod:`fpliif.serve.protocol` times out a slow request head (``header_timeout``); HEAD is
answered on every GET resource; every 405 carries ``Allow``; an error no handler took becomes a JSON 500.

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

from .. import __version__, limits
from ..adaptive import DEFAULT_DECODE
from ..labels import get_label_set
from .imaging import ApiError, decode_image, index_png, open_upload, rgb_png, rle_encode, rle_masks
from .settings import ServeSettings
from .upload import FIELD, read_upload

log = logging.getLogger("fpliif.serve")

STATIC_DIR = Path(__file__).parent / "static"
PARSE_PARAMS = (
    "size",
    "aligned",
    "format",
    "overlay",
    "rle",
    "alpha",
    "legend",
    "tta",
    "decode",
    "labels",
    "mask",
    "context",
)
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
  detection. `size`: the output is `size` x `size` pixels (default: the upload's own size, which must then
  be at most the server's `max_size` per side); the implicit decoder is queried at the output's pixel
  centres, so any resolution works.
* Work limit: a request may cost at most the server's `max_points` decoder queries (`GET /v1/model`, under
  `limits`): output pixels of each face (at most 512 x 512 for a large face in a photo), twice with `tta`.
  Aligned requests are checked before anything runs (422 for an explicit `size`, 413 when the upload's size
  implies it); photos right after detection (413, naming the number of faces).
* `tta=true`: flip test-time augmentation: each face crop is parsed as is and mirrored, and the two
  probability maps are averaged (left/right classes swapped back); about twice the parse time. Default:
  the server's setting (`fpliif serve --tta`; `GET /v1/model` shows it under `defaults`).
* `decode=dense` decodes every output pixel; `decode=adaptive` decodes a coarse grid and then re-queries the
  implicit decoder only where the prediction is uncertain (near part boundaries), refining coarse to fine:
  much less work, labels almost always identical; implicit models (FP-LIIF) only: with a dense model (SegFace,
  STN-iCNN) it is answered 422. Default: the server's setting (`fpliif serve --decode`), else the model's.
* `context=false` (photos): labels end at each face's crop window. By default (the parser's `context`) a second
  window 1.5 times as large labels hair, hat, neck and clothes beyond it; it counts against `max_points`.
* `labels=lapa|coarse|celebamask-hq`: every output in that label set, merged from the model's classes
  (`fpliif.labels.REMAPS`): class indices, palette, overlay colours, `classes`, `class_share`, mask names.
* `mask=hair,skin` (class names of the output label set): with `format=png`, a binary PNG (8-bit grey, 255 =
  any of the named classes, their union); with `format=json`, `"masks": {{"size": [H, W], "order":
  "row-major", "masks": [{{"index", "class", "size", "counts"}}]}}`, one RLE mask per named class (as `rle`).
  Unknown names are answered 422 naming the closest class.

Output (`format`, `overlay`):

* `format=png` (default): an 8-bit index PNG, pixel value = class index (see `GET /v1/model`), with the
  class palette embedded. Headers `X-Fpliif-Faces` (face count) and, without faces, `X-Fpliif-Message`.
* `overlay=true` (with `format=png`): an RGB PNG of the image with the class colours blended in (`alpha`),
  face boxes outlined, and a legend panel if `legend=true`.
* `format=json`: `{{"mode", "size": [W, H], "input_size": [W, H], "num_faces", "faces": [{{"box", "score",
  "crop", "landmarks"?, "angle"?, "class_share"}}], "class_share", "classes", "label_set", "tta", "decode",
  "message"?, "rle"?, "masks"?, "timing_ms"}}`. Boxes are in
  the pixels of the returned label map (`size`); `class_share` values are pixel fractions per class.
  `rle=true` adds `"rle": {{"size": [H, W], "order": "row-major", "masks": [{{"index", "class", "size",
  "counts"}}]}}`, one mask per class present: COCO-style *uncompressed* RLE, but scanned **row-major**
  (x fastest; COCO is column-major). `counts` alternates runs of 0 and 1 starting with 0s (a leading 0
  when the first pixel is inside) and sums to H*W. With PNG outputs `rle` is accepted and ignored.

Errors (JSON `{{"error", "detail"}}`): 400 malformed multipart body; 408 the upload did not arrive
within the server's upload timeout; 413 upload too large, too many pixels, an implied output over
`max_size`, or more work than `max_points`; 415 not multipart, or the file is not a supported image
(declared type and content are both checked); 422 empty/corrupt image, missing `{FIELD}` field, bad or
unknown query parameters, an explicit `size` needing more work than `max_points`; 500 an unexpected server
error (JSON too); 503 too many requests waiting; 504 the parse did not finish within the server's timeout
(the work is stopped).
"""


class ErrorBody(BaseModel):
    error: str
    detail: str


def _error_responses() -> dict[int | str, dict[str, Any]]:
    reasons = {
        400: "malformed multipart body",
        408: "the upload did not arrive within the server's upload timeout",
        413: "upload too large, too many pixels, implied output too large, or over the work budget",
        415: "not multipart/form-data, or not a supported image type",
        422: "empty or undecodable image, missing 'file' field, invalid query parameters, size over the budget",
        500: "unexpected server error",
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
    labels: str | None = None  # output label set (None: the model's)
    mask: tuple[str, ...] = ()  # class names of the output label set
    context: bool | None = None  # photos: the context window (None: the parser's default)


def label_options(model_set: Any, labels: str | None, mask: str | None) -> tuple[str | None, tuple[str, ...]]:
    """Check the ``labels`` and ``mask`` query parameters against the model's label set; 422 if bad."""
    target = model_set
    if labels is not None:
        try:
            model_set.remap_to(labels)
        except ValueError as e:
            raise ApiError(422, "invalid_parameter", f"labels: {e}") from None
        target = get_label_set(labels)
    names: tuple[str, ...] = ()
    if mask is not None:
        names = tuple(dict.fromkeys(n.strip() for n in mask.split(",") if n.strip()))
        try:
            target.indices(names)
        except ValueError as e:
            raise ApiError(422, "invalid_parameter", f"mask: {e}") from None
    return labels, names


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
        self.decode = getattr(parser, "decode", DEFAULT_DECODE)  # the parser's: by its model, FP-LIIF or dense
        self.decode = self.decode_mode(settings.decode)
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

    def decode_mode(self, decode: str | None, name: str = "decode") -> str:
        """A request's (or the server's) decoding, None: the server's default; ValueError naming ``name`` for
        adaptive decoding of a dense model."""
        if decode is None:
            return self.decode
        if decode == "adaptive" and not getattr(self.parser, "implicit", True):
            raise ValueError(
                f"{name}=adaptive queries an implicit decoder (FP-LIIF); the served model {self.info['name']!r} is "
                "dense: use decode=dense"
            )
        return decode

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
        deadline = limits.Deadline(s.timeout)  # the worker stops at it too (fpliif.limits.check_deadline)
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
            fut = loop.run_in_executor(self.executor(), self._counted, fn, deadline)
        except BaseException:
            self._leave()
            sem.release()
            raise

        def done(f: asyncio.Future) -> None:
            sem.release()
            if not f.cancelled():
                f.exception()  # retrieved: the 504 was answered already when the work stops at its deadline

        fut.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout=max(0.001, deadline.remaining()))
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

    def _counted(self, fn: Any, deadline: limits.Deadline | None = None) -> Any:
        with self._lock:
            self.busy += 1
        s = self.settings
        try:
            with limits.scope(deadline=deadline, max_points=s.max_points, max_pixels=s.max_pixels):
                limits.check_deadline()  # waited in the queue past the deadline: do not start
                return fn()
        except ApiError:
            raise
        except limits.DeadlineExceeded:
            raise ApiError(
                504, "timeout", f"parsing was stopped at the server's {s.timeout:g} s timeout; try a smaller image "
                "or a smaller 'size'"
            ) from None
        except limits.OverBudget as e:
            raise ApiError(
                413,
                "over_budget",
                f"{e.what or 'this request'} needs {e.value:,} decoder queries; this server allows at most "
                f"{e.limit:,} per request (fpliif serve --max-points)",
            ) from None
        except limits.TooManyPixels as e:
            detail = f"{e.what or 'image'}: {e.value:,} pixels; this server accepts at most {e.limit:,}"
            raise ApiError(413, "too_many_pixels", detail) from None
        except MemoryError:
            raise ApiError(413, "too_large", "not enough memory for this request; try a smaller image") from None
        except ValueError as e:  # the library's refusals of its input
            raise ApiError(422, "unprocessable_image", str(e)[:500]) from None
        except Exception:
            log.exception("parse failed")
            raise ApiError(500, "internal_error", "the server failed to parse this image (logged)") from None
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
        limits.check_deadline()
        if opts.aligned:
            result = self.parser.parse_aligned(rgb, size=opts.size, tta=opts.tta, decode=opts.decode)
        else:
            with self._detect_lock:
                dets = self.parser.detect(rgb)
            limits.check_deadline()
            extra = {} if opts.context is None else {"context": opts.context}
            result = self.parser(rgb, boxes=dets, tta=opts.tta, decode=opts.decode, **extra)
        t2 = time.perf_counter()
        limits.check_deadline()
        if opts.labels is not None:
            result = result.remap(opts.labels)
        message = result.message
        faces = len(result.faces)
        if opts.mask and opts.fmt == "png":
            from PIL import Image

            body = rgb_png(Image.fromarray(result.mask(*opts.mask).astype("uint8") * 255))
            return ParseOutput(body, "image/png", None, faces, message)
        if opts.overlay:
            body = rgb_png(result.overlay(opts.alpha, legend=opts.legend))
            return ParseOutput(body, "image/png", None, faces, message)
        if opts.fmt == "png":
            return ParseOutput(index_png(result.labels, result.label_set), "image/png", None, faces, message)
        w, h = result.size
        payload: dict[str, Any] = {
            "mode": "aligned" if opts.aligned else "photo",
            "size": [w, h],
            "input_size": [int(rgb.shape[1]), int(rgb.shape[0])],
            "num_faces": faces,
            "faces": [f.to_dict() for f in result.faces],
            "class_share": {k: round(v, 6) for k, v in result.class_share().items()},
            "classes": list(result.classes),
            "label_set": result.label_set.name,
            "tta": opts.tta,
            "decode": opts.decode,
        }
        if message:
            payload["message"] = message
        if opts.rle:
            payload["rle"] = rle_masks(result.labels, tuple(result.classes))
        if opts.mask:
            hw = list(result.labels.shape)
            payload["masks"] = {
                "order": "row-major",
                "size": hw,
                "masks": [
                    {"index": result.label_set.index(n), "class": n, "size": hw, "counts": rle_encode(result.mask(n))}
                    for n in opts.mask
                ],
            }
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


class _HeadAsGet:
    """Pure ASGI middleware: HEAD is answered as GET without the body (RFC 9110: every GET resource supports
    HEAD); where GET is not allowed, HEAD gets the same 405."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_head(message: dict) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_head)


class _CatchAll:
    """Pure ASGI middleware: an exception no handler took is logged and answered 500 with a JSON body (not
    re-raised, so the server keeps the connection); after the response started it can only be logged."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                response = _error(500, "internal_error", "the server failed to handle this request (logged)")
                await response(scope, receive, send)


def _allowed_methods(request: Request, allow: str | None) -> str:
    """The ``Allow`` header of a 405: the methods of the routes matching the path, HEAD wherever GET is."""
    from starlette.routing import Match

    methods = {m.strip().upper() for m in (allow or "").split(",") if m.strip()}
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "OPTIONS-NONE"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return ", ".join(sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m)))


def check_aligned_cost(upload_size: tuple[int, int], size: int | None, tta: bool, settings: ServeSettings) -> None:
    """Before any work: an aligned request's output (``size``, or the upload's own size) obeys ``max_size``
    (413 when implied) and its decoder queries the ``max_points`` budget (422 for an explicit ``size``, 413
    when the upload implies it)."""
    w, h = (int(v) for v in upload_size)
    if size is None and max(w, h) > settings.max_size:
        raise ApiError(
            413,
            "too_large",
            f"aligned=true without size outputs the upload's own size, {w}x{h}; this server's largest output side "
            f"is {settings.max_size} (fpliif serve --max-size): pass size={settings.max_size} or less, or upload a "
            "smaller crop",
        )
    ow, oh = (w, h) if size is None else (size, size)
    points = ow * oh * (2 if tta else 1)
    if points > settings.max_points:
        asked = f"aligned=true&size={size}" if size is not None else f"aligned=true (the upload's size, {w}x{h})"
        raise ApiError(
            413 if size is None else 422,
            "over_budget",
            f"{asked} needs {points:,} decoder queries ({ow}x{oh} output pixels{' x 2 for tta' if tta else ''}); "
            f"this server allows at most {settings.max_points:,} per request (fpliif serve --max-points): "
            "ask for a smaller size",
        )


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
    app.add_middleware(_CatchAll)
    app.add_middleware(_HeadAsGet)
    app.add_middleware(_SecurityHeaders)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return _error(422, "invalid_parameter", _validation_detail(exc.errors()), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request, headers.get("Allow"))
        response = _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))
        response.headers.update(headers)
        return response

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
                "max_points": settings.max_points,
                "timeout_s": settings.timeout,
                "upload_timeout_s": settings.upload_timeout,
                "header_timeout_s": settings.header_timeout,
                "workers": settings.workers,
            },
            "defaults": {"tta": settings.tta, "decode": engine.decode},
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
        overlay: bool = Query(
            False, description="return the colour overlay as an RGB PNG (format=png only: 422 with format=json)"
        ),
        rle: bool = Query(
            False,
            description="format=json: add per-class row-major RLE masks (PNG outputs have no place for them: "
            "ignored there)",
        ),
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
        labels: str | None = Query(
            None,
            description="output label set, merged from the model's classes: lapa, coarse or celebamask-hq "
            "(default: the model's own)",
        ),
        mask: str | None = Query(
            None,
            description="comma-separated class names of the output label set: format=png returns their union as "
            "a binary PNG, format=json adds one RLE mask per name under 'masks'",
        ),
        context: bool | None = Query(
            None,
            description="photos: label hair, hat, neck and clothes beyond each face's crop window from a window 1.5 "
            "times as large (default: the parser's setting, on; counts against max_points)",
        ),
    ) -> Response:
        unknown = sorted(set(request.query_params) - set(PARSE_PARAMS))
        if unknown:
            raise ApiError(
                422, "invalid_parameter", f"unknown query parameter(s) {unknown}; known: {list(PARSE_PARAMS)}"
            )
        if overlay and fmt != "png":
            raise ApiError(422, "invalid_parameter", "overlay=true returns a PNG: use it with format=png")
        if mask is not None and overlay:
            raise ApiError(422, "invalid_parameter", "mask returns a binary PNG (or JSON masks): not with overlay=true")
        labels, mask_names = label_options(engine.parser.label_set, labels, mask)
        try:
            decode_mode = engine.decode_mode(decode)
        except ValueError as e:
            raise ApiError(422, "invalid_parameter", str(e)) from None
        opts = ParseOptions(
            aligned,
            size,
            fmt,
            overlay,
            rle,
            alpha,
            legend,
            settings.tta if tta is None else tta,
            decode_mode,
            labels,
            mask_names,
            context=context,
        )
        upload = await read_upload(
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            request.stream(),
            settings.max_upload_bytes,
            settings.upload_timeout,
        )
        img = open_upload(upload.data, upload.content_type, settings.max_pixels)
        if aligned:
            check_aligned_cost(img.size, size, opts.tta, settings)
        out: ParseOutput = await engine.run(lambda: engine.parse(img, opts))
        headers = {"Cache-Control": "no-store", "X-Fpliif-Faces": str(out.faces)}
        if out.message:
            headers["X-Fpliif-Message"] = out.message.encode("ascii", "replace").decode("ascii")
        if out.payload is not None:
            return JSONResponse(out.payload, headers=headers)
        kind = "mask" if mask_names and fmt == "png" else "overlay" if overlay else "labels"
        headers["Content-Disposition"] = f'inline; filename="{kind}.png"'
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
