"""The files ``fpliif parse`` reads and writes: inputs planned into jobs, output names, image outputs.

Outputs of ``fpliif parse INPUT... --out DIR`` per image ``<stem>``:

* ``<stem>_labels.png``: 8-bit index PNG (pixel value = class index) with the class palette embedded
  (``--format png``, the default, and ``--format json``);
* ``<stem>_labels.npy``: (H, W) uint8 label map (``--format npy``);
* ``<stem>.json``: ``{"image", "size": [W, H], "label_set", "classes", "faces": [{"box", "score", "crop",
  "landmarks"?, "angle"?, "class_share"}], "class_share"}`` (``--format json``; ``classes``: the names of the label
  values, in ``--labels``' set when given);
* ``<stem>_overlay.png``: the photo with the label colours, face boxes and a legend (``--overlay``);
* ``<stem>_mask_<class>.png``: one binary mask per class named by ``--mask hair,skin`` (8-bit grey,
  255 = the class, 0 elsewhere).

Folder inputs are searched recursively (sorted) and their subfolder structure is mirrored under
``--out``; files whose outputs would collide (``x.jpg`` and ``x.png`` side by side) get the extension in
their stem (``x_jpg_labels.png``).

Videos (``--video``): ``<stem>_overlay.mp4`` (overlay video, always; a frame of odd width or height is padded
by one pixel at the right or bottom edge, as H.264's yuv420p needs even sides) plus per-frame labels in
``<stem>_labels/`` (``000000.png`` or ``.npy``, at the video's own size) and with ``--format json`` one
``<stem>.json`` with per-frame faces. ``--mask`` is not taken with ``--video``. A camera
index is named ``camera<N>``, a stream URL by its characters ``A-Za-z0-9._-`` (others as ``_``).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, scan_image_folder
from .video import is_stream

EXAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg"


def example_image() -> Path:
    """The bundled example photo (scikit-image's astronaut, public domain)."""
    return EXAMPLE_IMAGE


def report(msg: str) -> None:
    """One ``fpliif parse: msg`` line on stderr that does not break a progress bar."""
    from tqdm import tqdm

    tqdm.write(f"fpliif parse: {msg}", file=sys.stderr)


class _ReportedPerInput(logging.Filter):
    """Drops the parser's "no face detected" warnings: ``fpliif parse`` reports them itself, per file or video."""

    def filter(self, record: logging.LogRecord) -> bool:
        from .parser import NO_FACE_MESSAGE

        return not str(record.msg).startswith(NO_FACE_MESSAGE)


@contextmanager
def no_face_reported_per_input() -> Iterator[None]:
    """Within it, the parser's per-image "no face" log lines are dropped: the command reports a file without
    faces by its name, and a video by its count of such frames, instead of one line per frame."""
    logger, quiet = logging.getLogger("fpliif.infer"), _ReportedPerInput()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


class Job:
    """One input file (or, for videos, a live ``source``: camera index or URL) and the output stem (relative to
    --out) its outputs are named after."""

    def __init__(self, path: Path, key: Path, source: str | None = None):
        self.path = path
        self.key = key
        self.source = source

    def outputs(
        self, out: Path, fmt: str, overlay: bool, video: bool = False, masks: Sequence[str] = ()
    ) -> dict[str, Path]:
        """The output files of this job under ``out``, by kind (``labels``, ``npy``, ``json``, ``overlay``,
        ``mask:<class>``; videos: ``overlay``, ``frames``, ``json``)."""
        base = out / self.key.parent
        stem = self.key.name
        if video:
            paths = {"overlay": base / f"{stem}_overlay.mp4", "frames": base / f"{stem}_labels"}
            if fmt == "json":
                paths["json"] = base / f"{stem}.json"
            return paths
        paths = {}
        if fmt in ("png", "json"):
            paths["labels"] = base / f"{stem}_labels.png"
        if fmt == "npy":
            paths["npy"] = base / f"{stem}_labels.npy"
        if fmt == "json":
            paths["json"] = base / f"{stem}.json"
        if overlay:
            paths["overlay"] = base / f"{stem}_overlay.png"
        for name in masks:
            paths[f"mask:{name}"] = base / f"{stem}_mask_{mask_file_name(name)}.png"
        return paths


def mask_file_name(name: str) -> str:
    """A class name as it appears in ``<stem>_mask_<name>.png`` (characters other than ``A-Za-z0-9._-`` -> ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def plan_jobs(inputs: list[str], out: Path, video: bool) -> tuple[list[Job], list[str]]:
    """Input files/folders -> jobs with collision-free output stems; and errors for missing inputs."""
    entries, streams, errors = _find_inputs(inputs, out, video)
    seen: set[Path] = set()
    once = []
    for f, rel in entries:  # a file given twice (or also inside a folder given) is parsed once, named as first given
        if f.resolve() not in seen:
            seen.add(f.resolve())
            once.append((f, rel))
    jobs = [Job(f, k) for k, (f, _) in zip(_unique_keys(once, out), once, strict=True)]
    return jobs + streams, errors


def _find_inputs(inputs: list[str], out: Path, video: bool) -> tuple[list[tuple[Path, Path]], list[Job], list[str]]:
    """(file, path relative to its input folder) of every input file; live sources as jobs; errors."""
    exts = VIDEO_EXTENSIONS if video else IMAGE_EXTENSIONS
    entries: list[tuple[Path, Path]] = []
    errors = []
    streams: list[Job] = []
    for text in inputs:
        p = Path(text)
        if video and is_stream(text) and not p.exists():
            name = f"camera{int(text)}" if text.isdigit() else mask_file_name(text).strip("_")
            streams.append(Job(Path(text), Path(name), source=text))
        elif p.is_dir():
            if video:
                files = sorted(
                    (f for f in p.rglob("*") if f.suffix.lower() in exts and f.is_file()),
                    key=lambda f: f.relative_to(p).as_posix(),
                )
            else:
                found = scan_image_folder(p, exclude=[out] if _within(out, p) else [])  # outputs are not inputs
                files, inside_out = found.files, len(found.excluded)
                errors += [f"{link}: a link to a file that does not exist; skipped" for link in found.broken]
                if found.others:
                    report(f"{p}: {found.others} file(s) without an image extension passed over ({', '.join(exts)})")
                if inside_out and files:
                    report(f"{p}: skipped {inside_out} image file(s) inside --out {out}")
                elif inside_out:
                    errors.append(
                        f"{p}: every image file in it lies inside --out {out}; write the outputs elsewhere "
                        "(a --out folder outside the input folder)"
                    )
                    continue
            if not files:
                errors.append(f"{p}: no {'video' if video else 'image'} files found (extensions: {', '.join(exts)})")
            entries += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            entries.append((p, Path(p.name)))
        else:
            errors.append(f"{p}: no such file or folder")
    return entries, streams, errors


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (resolved: links and ``..`` followed)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _unique_keys(entries: list[tuple[Path, Path]], out: Path) -> list[Path]:
    """Output stems of the entries: the relative path without suffix, with the extension as written where two
    collide (``photo.jpg`` and ``photo.JPG``: ``photo_jpg`` and ``photo_JPG``); ValueError if two different files
    still share one (the same relative path under two inputs)."""
    keys = [rel.parent / rel.stem for _, rel in entries]
    counts: dict[Path, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    keys = [
        k if counts[k] == 1 else k.parent / f"{rel.stem}_{rel.suffix.lstrip('.')}"
        for k, (_, rel) in zip(keys, entries, strict=True)
    ]
    seen: dict[Path, Path] = {}
    for k, (f, _) in zip(keys, entries, strict=True):
        if k in seen and seen[k].resolve() != f.resolve():
            raise ValueError(
                f"inputs {seen[k]} and {f} would both write {out / k}_*; "
                "parse them in separate runs with different --out folders, or rename one"
            )
        seen[k] = f
    return keys


def write_image_outputs(res: Any, paths: dict[str, Path], alpha: float) -> None:
    """Write one parsed image's outputs (``Job.outputs`` kinds) from its ParseResult ``res``."""
    import json

    from PIL import Image

    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    for key, p in paths.items():
        if key.startswith("mask:"):
            Image.fromarray(res.mask(key[5:]).astype(np.uint8) * 255).save(p, optimize=True)  # mode L
    if "labels" in paths:
        res.save_png(paths["labels"])
    if "npy" in paths:
        np.save(paths["npy"], res.labels)
    if "json" in paths:
        paths["json"].write_text(json.dumps(res.to_dict(), indent=2) + "\n")
    if "overlay" in paths:
        res.overlay(alpha, legend=True).save(paths["overlay"])
