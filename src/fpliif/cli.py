"""The ``fpliif`` command line. Each subcommand lives next to the code it drives and adds itself here."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError
from .validate import int_arg

__all__ = ["UserError", "build_parser", "check_output_path", "input_size_arg", "main", "print_json"]

# Modules that define ``add_commands(subparsers)``; each command sets ``func(args) -> int``.
COMMAND_MODULES = (
    "fpliif.bench.cli",
    "fpliif.data.cli",
    "fpliif.train.cli",
    "fpliif.eval.cli",
    "fpliif.infer.cli",
    "fpliif.serve.cli",
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fpliif", description="FP-LIIF face parsing")
    parser.add_argument("--version", action="version", version=f"fpliif {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] in ("torch", "fastapi", "uvicorn"):
                continue  # optional dependency missing (e.g. an onnxruntime-only install): skip those commands
            raise
        module.add_commands(sub)
    return parser


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def input_size_arg(text: str) -> int:
    """argparse ``type`` of a model input size (``--input-size``, ``export --size``): an integer in the range a
    weight file's ``input_size`` may hold (:data:`fpliif.models.checkpoint.MIN_INPUT_SIZE` .. ``MAX_INPUT_SIZE``)."""
    from .models.checkpoint import MAX_INPUT_SIZE, MIN_INPUT_SIZE  # when the option is given: no torch for --help

    return int_arg(MIN_INPUT_SIZE, MAX_INPUT_SIZE)(text)


def check_output_path(text: str, flag: str, folder: bool) -> Path:
    """An output path option, checked before any work: not empty, and not an existing file where a folder is
    meant (or a folder where a file is); ValueError naming ``flag``. Returns it as a Path."""
    if not text or not text.strip():
        raise ValueError(f"{flag}: expected {'a folder' if folder else 'a file'} name, got an empty string")
    path = Path(text)
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {text}: exists and is not a folder")
    if not folder and (path.is_dir() or text.endswith(("/", "\\"))):
        raise ValueError(f"{flag} {text}: is a folder; expected a file name")
    blocker = next((a for a in path.parents if a.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ValueError(f"{flag} {text}: {blocker} is a file, not a folder")
    return path


def _take_late_overrides(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """Let ``key=value`` overrides follow options too (``train --config c.yaml a=1 --resume b=2``).

    argparse stops filling a ``nargs='*'`` positional at the first option; commands with an
    ``overrides`` list get the later ``key=value`` words appended in order. Returns what is left.
    """
    if not isinstance(getattr(args, "overrides", None), list):
        return extra
    late = [word for word in extra if "=" in word and not word.startswith("-")]
    args.overrides.extend(late)
    return [word for word in extra if word not in late]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    extra = _take_late_overrides(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"fpliif {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fpliif {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m fpliif.cli: run the package's module, not a second copy of it
    from fpliif.cli import main as _main

    raise SystemExit(_main())
