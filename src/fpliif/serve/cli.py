"""``fpliif serve``: run the web service and page (FastAPI app under uvicorn).

FastAPI and uvicorn are imported only when the command runs, so the rest of the CLI works without the
``serve`` extra.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import sys
import typing

from ..errors import ConfigError
from ..validate import float_arg
from .settings import ServeSettings


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="web service + page for face parsing (POST /v1/parse, GET /v1/model, page at /)",
        description="Serve face parsing over HTTP: POST /v1/parse (multipart field 'file'), GET /v1/model, "
        "GET /healthz, OpenAPI at /docs, and a web page at /. Needs: pip install 'fpliif[serve]'. "
        "There is no authentication: the default host 127.0.0.1 accepts local connections only.",
    )
    p.add_argument(
        "--weights", default=None, help="bundled weights name or a .safetensors/.onnx file (default: bundled)"
    )
    add_settings_flags(p)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def flag_of(f: dataclasses.Field) -> str:
    """The ``fpliif serve`` flag of a :class:`ServeSettings` field."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_settings_flags(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`ServeSettings` field, as its metadata says (help, flag, choices), with the field's
    default (None for a default computed when the settings are made: ``--max-pixels`` reads the environment
    then, so a bad value there cannot break ``--help``)."""
    hints = typing.get_type_hints(ServeSettings)
    for f in dataclasses.fields(ServeSettings):
        default = None if f.default is dataclasses.MISSING else f.default
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
        if kind is bool:
            action = argparse.BooleanOptionalAction if default else "store_true"
            p.add_argument(flag_of(f), dest=f.name, action=action, default=default, help=f.metadata["help"])
            continue
        p.add_argument(
            flag_of(f),
            dest=f.name,
            metavar=flag_of(f)[2:].upper().replace("-", "_"),
            type=float_arg() if kind is float else kind,
            default=default,
            choices=f.metadata.get("choices"),
            help=f.metadata["help"],
        )


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """The settings the flags ask for (a flag left at None: the field's default); a value out of range is a
    ValueError naming the flag (ServeSettings holds the ranges)."""
    fields = dataclasses.fields(ServeSettings)
    values = {f.name: getattr(args, f.name) for f in fields}
    try:
        return ServeSettings(**{k: v for k, v in values.items() if v is not None})
    except ConfigError as e:
        flag = next((flag_of(f) for f in fields if f.name == e.key), e.key)
        raise ValueError(f"{flag}: {e.reason}") from None


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
