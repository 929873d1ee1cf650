"""The inference commands: ``fpliif parse`` (images, folders, videos) and ``fpliif export onnx``.

One module a concern, so each reads on its own:

* :mod:`.cli_parse`: ``parse``'s options, their checks (all before any work) and the image loop;
* :mod:`.cli_video`: ``parse --video``, frame by frame (videos, cameras, streams);
* :mod:`.cli_files`: the files ``parse`` reads and writes (input planning, output names, image outputs, the
  bundled example photo);
* :mod:`.cli_export`: ``export onnx``.

Building these commands' options imports no torch (``fpliif --help``; the onnxruntime path runs without it).
"""

from __future__ import annotations

import argparse

from . import cli_export, cli_parse
from .cli_files import example_image

__all__ = ["add_commands", "example_image"]  # example_image: the bundled photo, as tests, scripts and bench use it


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``fpliif parse`` and ``fpliif export``."""
    cli_parse.add_command(sub)
    cli_export.add_command(sub)
