"""``fpliif serve``: face parsing as a web service (FastAPI + uvicorn) with a small web page.

Endpoints: ``POST /v1/parse`` (multipart image upload -> index PNG, overlay PNG or JSON with optional
RLE masks), ``GET /v1/model``, ``GET /healthz``, the OpenAPI schema at ``/openapi.json`` (``/docs``),
and the page at ``/`` (files in ``static/``; no build step). Needs the ``serve`` extra
(``pip install 'fpliif[serve]'``).

Modules: :mod:`~fpliif.serve.app` (:func:`create_app`: middleware, error handlers), :mod:`~fpliif.serve.routes`
(the routes), :mod:`~fpliif.serve.engine` (the parser, its worker threads and the concurrency gate),
:mod:`~fpliif.serve.settings` (:class:`ServeSettings`, whose fields are the ``fpliif serve`` flags),
:mod:`~fpliif.serve.upload` (bounded multipart reading),
:mod:`~fpliif.serve.imaging` (type sniffing, decoding with limits, PNG and RLE outputs),
:mod:`~fpliif.serve.protocol` (uvicorn's HTTP protocol with a request-head timeout, and the server's
connection options), :mod:`~fpliif.serve.cli` (the ``fpliif serve`` command).
"""

from __future__ import annotations

from typing import Any

from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def create_app(parser_or_weights: Any = None, settings: ServeSettings | None = None) -> Any:
    """See :func:`fpliif.serve.app.create_app` (imported lazily: FastAPI is an optional dependency)."""
    from .app import create_app as _create_app

    return _create_app(parser_or_weights, settings)
