"""The ``fpliif`` command line. Each subcommand lives next to the code it drives and adds itself here."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError
from .validate import DEVICES, MAX_THREADS, int_arg

__all__ = [
    "UserError",
    "build_parser",
    "check_output_path",
    "device_options",
    "input_size_arg",
    "main",
    "print_json",
    "progress_options",
    "require_torch",
    "threads_options",
    "weights_options",
    "workers_options",
]

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


# ---------------------------------------------------------------------------------------------- shared options
# Parent parsers (``add_parser(..., parents=[...])``) of the options several commands take: one definition of
# each flag's name, type, range and meaning. Commands that read a dataset also share fpliif.data.cli's
# ``dataset_options`` (built on these).
def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def weights_options() -> argparse.ArgumentParser:
    """``--weights``: a bundled weights name or a .safetensors file (default: the bundled model)."""
    p = _parent()
    p.add_argument("--weights", help="bundled weights name or .safetensors file (default: the bundled model)")
    return p


def device_options() -> argparse.ArgumentParser:
    """``--device cpu|cuda`` (default cpu): where the model runs."""
    p = _parent()
    p.add_argument("--device", choices=DEVICES, default="cpu", help="where the model runs (default: cpu)")
    return p


def threads_options() -> argparse.ArgumentParser:
    """``--threads N``: CPU threads of the model (1 .. MAX_THREADS; default None: the library's choice)."""
    p = _parent()
    p.add_argument(
        "--threads",
        type=int_arg(1, MAX_THREADS),
        default=None,
        help="CPU threads for torch / onnxruntime (default: the library's choice)",
    )
    return p


def workers_options(default: str = "min(2, CPUs)") -> argparse.ArgumentParser:
    """``--workers N``: processes that read the data (0: this process; default None, described by ``default``)."""
    p = _parent()
    p.add_argument(
        "--workers",
        type=int_arg(0, MAX_THREADS),
        default=None,
        help=f"processes that read the data (0: this process; default: {default})",
    )
    return p


def progress_options(what: str = "progress bars") -> argparse.ArgumentParser:
    """``--no-progress`` (dest ``no_progress``): silences ``what`` on stderr; errors are still printed."""
    p = _parent()
    p.add_argument("--no-progress", action="store_true", help=f"no {what} on stderr (errors are still printed)")
    return p


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def require_torch(why: str) -> None:
    """A one-line ValueError (the command's error, exit code 2) where PyTorch is not installed, before anything
    imports it; ``why``: what the command needs it for."""
    if importlib.util.find_spec("torch") is None:
        raise ValueError(
            f"needs PyTorch ({why}): pip install torch; an onnxruntime-only install parses with "
            "`fpliif parse --onnx FILE`"
        )


def input_size_arg(text: str) -> int:
    """argparse ``type`` of a model input size (``--input-size``, ``export --size``): an integer in the range a
    weight file's ``input_size`` may hold (:data:`fpliif.models.checkpoint.MIN_INPUT_SIZE` .. ``MAX_INPUT_SIZE``)."""
    from .models.checkpoint import MAX_INPUT_SIZE, MIN_INPUT_SIZE  # when the option is given: no torch for --help

    return int_arg(MIN_INPUT_SIZE, MAX_INPUT_SIZE)(text)


def check_output_path(text: str, flag: str, folder: bool) -> Path:
    """An output path option, checked before any work: not empty, no name longer than the file system allows,
    not an existing file where a folder is meant (or a folder where a file is), and its nearest existing folder
    writable; ValueError naming ``flag``. Returns it as a Path."""
    if not text or not text.strip():
        raise ValueError(f"{flag}: expected {'a folder' if folder else 'a file'} name, got an empty string")
    path = Path(text)
    try:
        if folder and path.exists() and not path.is_dir():
            raise ValueError(f"{flag} {text}: exists and is not a folder")
        if not folder and (path.is_dir() or text.endswith(("/", "\\"))):
            raise ValueError(f"{flag} {text}: is a folder; expected a file name")
        nearest = [path, *path.parents] if folder else list(path.parents)  # an existing folder is written into
        blocker = next((a for a in nearest if a.exists()), Path("."))
    except OSError as e:  # e.g. a name longer than the file system allows
        raise ValueError(f"{flag} {text:.80}: {e.strerror}") from None
    if not blocker.is_dir():
        raise ValueError(f"{flag} {text}: {blocker} is a file, not a folder")
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)  # "." has no parts
    if longest > _name_max(blocker):
        raise ValueError(f"{flag} {text:.80}: a name of {longest} bytes, longer than the file system allows")
    if not os.access(blocker, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {text}: cannot write into {blocker} ({_why_not_writable(blocker)})")
    return path


def _why_not_writable(folder: Path) -> str:
    """ "read-only file system" where ``folder`` lies on one, else "permission denied"."""
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        read_only = False
    return "read-only file system" if read_only else "permission denied"


def error_text(e: BaseException) -> str:
    """A command's error as its one line; for an error re-raised from a DataLoader worker, the original message
    rather than the worker's traceback that torch puts in front of it."""
    msg = str(e.args[0] if isinstance(e, KeyError) and e.args else e)
    if msg.startswith("Caught ") and "\nOriginal Traceback" in msg:
        last = msg.rstrip().splitlines()[-1]  # "package.module.ErrorType: the original message"
        return last.split(": ", 1)[1] if ": " in last else last
    return msg


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` allows (255 where it does not say)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
        return 255


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
    except (UserError, ValueError, OSError, KeyError) as e:  # OSError: a file system refusal (full, read-only)
        print(f"fpliif {args.command}: error: {error_text(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fpliif {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m fpliif.cli: run the package's module, not a second copy of it
    from fpliif.cli import main as _main

    raise SystemExit(_main())
