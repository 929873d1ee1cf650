"""``fpliif serve``: run the web service and page (FastAPI app under uvicorn).

FastAPI and uvicorn are imported only when the command runs, so the rest of the CLI works without the
``serve`` extra.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from ..errors import ConfigError
from ..limits import DEFAULT_MAX_PIXELS, default_max_pixels
from ..validate import float_arg
from .settings import ServeSettings

FLAGS = {"workers": "--workers-threads"}
"""Settings whose flag is not ``--`` + the field's name with dashes."""


def add_commands(sub: argparse._SubParsersAction) -> None:
    d = ServeSettings(max_pixels=DEFAULT_MAX_PIXELS)  # not from the environment: a bad value must not break --help
    p = sub.add_parser(
        "serve",
        help="web service + page for face parsing (POST /v1/parse, GET /v1/model, page at /)",
        description="Serve face parsing over HTTP: POST /v1/parse (multipart field 'file'), GET /v1/model, "
        "GET /healthz, OpenAPI at /docs, and a web page at /. Needs: pip install 'fpliif[serve]'. "
        "There is no authentication: the default host 127.0.0.1 accepts local connections only.",
    )
    p.add_argument("--host", default=d.host, help="interface to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=d.port, help="TCP port (default %(default)s)")
    p.add_argument(
        "--weights", default=None, help="bundled weights name or a .safetensors/.onnx file (default: bundled)"
    )
    p.add_argument(
        "--max-upload-mb",
        type=float_arg(),
        default=d.max_upload_mb,
        help="largest image file, MiB (413; default %(default)s)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help=f"largest image in pixels (413; default $FPLIIF_MAX_PIXELS or {DEFAULT_MAX_PIXELS}, as fpliif parse)",
    )
    p.add_argument(
        "--max-size",
        type=int,
        default=d.max_size,
        help="largest output side: the 'size' parameter, and an aligned upload's own size (default %(default)s)",
    )
    p.add_argument(
        "--max-points",
        type=int,
        default=d.max_points,
        help="most work per request, in decoder queries: output pixels of each face, x2 with TTA; "
        "checked before the work starts (413/422; default %(default)s)",
    )
    p.add_argument(
        "--workers-threads",
        type=int,
        default=d.workers,
        help="parses running at once, each on its own thread (default %(default)s)",
    )
    p.add_argument(
        "--torch-threads", type=int, default=None, help="CPU threads per parse (default: CPUs // --workers-threads)"
    )
    p.add_argument(
        "--timeout",
        type=float_arg(),
        default=d.timeout,
        help="seconds per request: wait + parse (504; default %(default)s)",
    )
    p.add_argument(
        "--upload-timeout",
        type=float_arg(),
        default=d.upload_timeout,
        help="seconds allowed for receiving an upload (408; default %(default)s)",
    )
    p.add_argument(
        "--header-timeout",
        type=float_arg(),
        default=d.header_timeout,
        help="seconds allowed for a request's line and headers (408, connection closed; default %(default)s)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help="requests allowed to wait for a worker (503; default %(default)s)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="flip test-time augmentation by default (requests may still pass tta=false)",
    )
    p.add_argument(
        "--decode",
        choices=["dense", "adaptive"],
        default=d.decode,
        help="default decoding (requests may pass decode=...): dense, every pixel, or adaptive, coarse to fine, "
        "re-querying the decoder only where the prediction is uncertain (implicit models only); default: the "
        "model's (adaptive for FP-LIIF, dense for dense models)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """The settings the flags ask for; a value out of range is a ValueError naming the flag (ServeSettings
    holds the ranges)."""
    try:
        return _settings(args)
    except ConfigError as e:
        raise ValueError(f"{FLAGS.get(e.key, '--' + e.key.replace('_', '-'))}: {e.reason}") from None


def _settings(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(
        host=args.host,
        port=args.port,
        max_upload_mb=args.max_upload_mb,
        max_pixels=default_max_pixels() if args.max_pixels is None else args.max_pixels,
        max_size=args.max_size,
        max_points=args.max_points,
        workers=args.workers_threads,
        torch_threads=args.torch_threads,
        timeout=args.timeout,
        upload_timeout=args.upload_timeout,
        header_timeout=args.header_timeout,
        max_queue=args.max_queue,
        tta=args.tta,
        decode=args.decode,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    from ..errors import UserError

    settings = settings_from_args(args)
    try:
        import uvicorn

        from .app import create_app
        from .protocol import uvicorn_options
    except ModuleNotFoundError as e:
        raise UserError(f"needs the 'serve' extra ({e.name} is missing): pip install 'fpliif[serve]'") from None
    app = create_app(args.weights, settings)
    info = app.state.engine.info
    params = f"{info['params']:,} parameters" if info["params"] else "parameters unknown"
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(
        f"fpliif serve: model {info['name']} ({info['weights']}, {params}), "
        f"{settings.workers} worker(s) x {settings.threads_per_worker()} thread(s)\n"
        f"fpliif serve: page http://{shown}:{settings.port}/  API docs http://{shown}:{settings.port}/docs",
        file=sys.stderr,
    )
    if not _is_loopback(settings.host):
        print(
            f"fpliif serve: warning: listening on {settings.host}, reachable from other machines; "
            "the service has no authentication",
            file=sys.stderr,
        )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level, **uvicorn_options(settings))
    return 0
