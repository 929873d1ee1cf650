"""The FastAPI application: ``POST /v1/parse``, ``GET /v1/model``, ``GET /healthz`` and the page at ``/``.

    from fpliif.serve import ServeSettings, create_app

    app = create_app("weights.safetensors", ServeSettings(max_upload_mb=5))   # or a FaceParser

The model is loaded once, by :func:`create_app`. Parses run on a small thread pool, off the event loop;
an anyio ``CapacityLimiter`` bounds them to ``settings.workers`` at a time, and each gets
``settings.threads_per_worker()`` torch threads. A request waits at most ``settings.timeout`` seconds for a
worker plus its parse, else it is answered 504; the parse runs under the same deadline
(:func:`fpliif.limits.scope`) and stops at the next decode chunk or face once it has passed, freeing its
worker. The cost of a request is bounded before the work starts: output sizes by ``max_size`` and
``max_pixels``, decoder queries (output pixels x faces, x2 with TTA) by ``max_points``.

Connections: :mod:`fpliif.serve.protocol` times out a slow request head (``header_timeout``); HEAD is
answered on every GET resource; every 405 carries ``Allow``; an error no handler took becomes a JSON 500.

Modules: :mod:`~fpliif.serve.engine` (the parser, its workers and the gate), :mod:`~fpliif.serve.routes` (the
routes); this one builds the app: middleware, error handlers, the routes and the static files.

Every error the app answers is JSON ``{"error": <code>, "detail": <message>}`` with a 4xx/5xx status; see
:data:`fpliif.serve.routes.PARSE_DOC` for the parameters and status codes of ``POST /v1/parse``. A request that is
not valid HTTP (a malformed request line, a head over 16 KiB) never reaches the app: uvicorn answers it with a
plain-text 400. A request whose client disconnected is dropped or stopped (:meth:`Engine.run`; logged, 499).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .engine import Engine, _is_parser, load_parser
from .imaging import ApiError
from .routes import STATIC_DIR, build_router
from .settings import ServeSettings

log = logging.getLogger("fpliif.serve")


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
        given = [name for name in ("amp", "detector") if getattr(settings, name) is not None]
        if given:
            raise ValueError(
                f"settings {', '.join(given)}: apply to weights create_app loads; give them to the FaceParser passed"
            )
        parser, weights_name = parser_or_weights, None
    else:
        parser, weights_name = load_parser(parser_or_weights, settings.device, settings.amp, settings.detector)
    engine = Engine(parser, settings, weights_name)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        engine.close()

    # FastAPIOffline: /docs (Swagger UI) and /redoc load their scripts from the fastapi-offline package, not a CDN
    app = FastAPIOffline(
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
    add_error_handlers(app)
    app.include_router(build_router(engine))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON ``{"error", "detail"}``: the service's own, invalid parameters, 404 and 405."""

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
