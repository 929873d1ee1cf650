"""``fpliif parse --video``: videos, camera indices and stream URLs parsed frame by frame.

Each input gives an overlay video, per-frame labels and with ``--format json`` per-frame faces
(:mod:`.cli_files` names them). Faces are detected per frame and their boxes and landmarks smoothed over time
(:class:`~fpliif.infer.tracking.FaceTracker`; ``--no-smooth``: raw). A live source runs until it ends or
Ctrl-C; ``--max-frames N`` parses at most the first N frames of each input.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .cli_files import Job, report

FRAME_FILE = re.compile(r"\d{6,}\.(png|npy)")
"""The name of one frame's labels in ``<stem>_labels/`` (its index, at least 6 digits)."""


def parse_videos(parser: Any, todo: list[tuple[Job, dict[str, Path]]], args: argparse.Namespace) -> tuple[int, int]:
    """Parse every video job into its output ``paths``; (parsed, failed)."""
    ok = fail = 0
    for job, paths in todo:
        try:
            n, expected, faceless, backend = _parse_video(parser, job, paths, args)
        except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:  # this video fails, the next runs
            report(f"failed {job.source or job.path}: {e}")
            fail += 1
            continue
        name = job.source or job.path
        if 0 < n < expected:
            report(
                f"{name}: read {n} of the {expected} frames its header lists (truncated or damaged?); outputs hold {n}"
            )
        if faceless:
            report(f"{name}: no face detected in {faceless} of {n} frames; their labels are all background")
        if not args.no_progress:
            print(f"fpliif parse: {name}: {n} frames -> {paths['overlay']} ({backend})", file=sys.stderr)
        ok += 1
    return ok, fail


def _batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _parse_video(parser: Any, job: Job, paths: dict[str, Path], args: argparse.Namespace) -> tuple[int, int, int, str]:
    """Parse one video frame by frame: overlay video, per-frame labels, optional JSON; (frames, frames the header
    lists up to ``--max-frames`` or -1, frames without a face, writer).
    Faces are detected per frame and their boxes and landmarks smoothed over time (``--no-smooth``: raw)."""
    import json

    from tqdm import tqdm

    from .tracking import FaceTracker
    from .video import VideoWriter, read_frames

    frames, fps, count = read_frames(job.source or job.path, max_frames=args.max_frames)
    tracker = None if args.no_smooth else FaceTracker(fps)
    paths["frames"].mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    index = faceless = 0
    with (
        tqdm(
            total=count if count > 0 else None,
            unit="frame",
            file=sys.stderr,
            disable=args.no_progress,
            desc=job.key.name,
        ) as bar,
        VideoWriter(paths["overlay"], fps) as writer,
    ):
        for batch in _batched(frames, args.batch_size):
            boxes = None if tracker is None else [tracker(parser.detect(frame)) for frame in batch]
            for res in parser(batch, boxes=boxes, extend=args.extend is True):  # off unless --extend: flicker
                _write_frame(res, index, paths["frames"], writer, records, args)
                index += 1
                faceless += not res.faces
                bar.update(1)
    if "json" in paths:
        from ..labels import get_label_set

        label_set = parser.label_set if args.labels is None else get_label_set(args.labels)
        doc = {
            "video": job.source or str(job.path),
            "fps": fps,
            "label_set": label_set.name,
            "classes": list(label_set.classes),
            "frames": records,
        }
        paths["json"].write_text(json.dumps(doc, indent=2) + "\n")
    _remove_stale_frames(paths["frames"], index, ".npy" if args.format == "npy" else ".png")
    return index, count, faceless, writer.backend


def _remove_stale_frames(frame_dir: Path, count: int, suffix: str) -> None:
    """Frame files of an earlier run (``--overwrite``) that this one did not write: ``NNNNNN.png``/``.npy`` from
    ``count`` on, or of the other format. Files of other names are left alone."""
    for p in frame_dir.iterdir():
        if FRAME_FILE.fullmatch(p.name) and (p.suffix != suffix or int(p.stem) >= count) and p.is_file():
            p.unlink()


def _write_frame(
    res: Any, index: int, frame_dir: Path, writer: Any, records: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    """One parsed frame: its overlay into the video, its labels file, its faces into ``records`` (json)."""
    from .result import save_index_png

    if args.labels is not None:
        res = res.remap(args.labels)
    writer.write(np.asarray(res.overlay(args.alpha, legend=False)))
    if args.format == "npy":
        np.save(frame_dir / f"{index:06d}.npy", res.labels)
    else:
        save_index_png(res.labels, frame_dir / f"{index:06d}.png", res.label_set)
    if args.format == "json":
        d = res.to_dict()
        records.append({"frame": index, "faces": d["faces"], "class_share": d["class_share"]})
