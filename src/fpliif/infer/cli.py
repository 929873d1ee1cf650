"""``fpliif parse`` (images, folders, videos) and ``fpliif export onnx``.

Outputs of ``fpliif parse INPUT... --out DIR`` per image ``<stem>``:

* ``<stem>_labels.png``: 8-bit index PNG (pixel value = class index) with the class palette embedded
  (``--format png``, the default, and ``--format json``);
* ``<stem>_labels.npy``: (H, W) uint8 label map (``--format npy``);
* ``<stem>.json``: ``{"image", "size": [W, H], "faces": [{"box", "score", "crop", "landmarks"?, "angle"?,
  "class_share"}], "class_share"}`` (``--format json``);
* ``<stem>_overlay.png``: the photo with the label colours, face boxes and a legend (``--overlay``);
* ``<stem>_mask_<class>.png``: one binary mask per class named by ``--mask hair,skin`` (8-bit grey,
  255 = the class, 0 elsewhere).

``--labels lapa|coarse|celebamask-hq`` writes every output in that label set (index PNG and palette, npy,
JSON class shares, overlay, and the names ``--mask`` takes), remapped from the model's classes by
:func:`fpliif.labels.remap_labels`. Unknown ``--labels``/``--mask`` names are usage errors (exit code 2),
reported before any image is parsed.

Folder inputs are searched recursively (sorted) and their subfolder structure is mirrored under
``--out``; files whose outputs would collide (``x.jpg`` and ``x.png`` side by side) get the extension in
their stem (``x_jpg_labels.png``). Unreadable files are reported on stderr (file and reason) and
skipped. Existing outputs are never replaced without ``--overwrite``: such inputs are refused with a
message. Exit code: 0 if every input was parsed, 1 if any failed or was refused, 2 for usage errors.

Videos (``--video``): ``<stem>_overlay.mp4`` (overlay video) plus per-frame labels in ``<stem>_labels/``
(``000000.png`` or ``.npy``) and with ``--format json`` one ``<stem>.json`` with per-frame faces. Inputs may
also be a camera index (``--video 0``: stem ``camera0``) or a stream URL OpenCV can open (stem: the URL with
other characters than ``A-Za-z0-9._-`` as ``_``); a live source runs until it ends or Ctrl-C; ``--max-frames N``
parses at most the first N frames of each. Face boxes and landmarks are smoothed over time
(:class:`~fpliif.infer.tracking.FaceTracker`; ``--no-smooth``: raw).

This module imports torch only for the torch backend, so ``--backend onnxruntime`` runs on onnxruntime.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..cli import check_output_path, input_size_arg
from ..labels import LABEL_SETS, LabelSet, get_label_set
from ..limits import LimitError
from ..validate import MAX_THREADS, float_arg, int_arg
from .framing import CONTEXT_FEATHER
from .images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, iter_image_files, load_image
from .video import is_stream

EXAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg"
GROUP_PIXELS = 16_000_000
"""Most pixels of the images parsed together (a larger image is parsed alone): bounds a folder run's memory."""


def example_image() -> Path:
    """The bundled example photo (scikit-image's astronaut, public domain)."""
    return EXAMPLE_IMAGE


# ---------------------------------------------------------------------------------------------- planning
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
    exts = VIDEO_EXTENSIONS if video else IMAGE_EXTENSIONS
    entries: list[tuple[Path, Path]] = []  # (file, relative key without suffix handling)
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
                files = list(iter_image_files(p, exclude=[out]))
            if not files:
                errors.append(f"{p}: no {'video' if video else 'image'} files found (extensions: {', '.join(exts)})")
            entries += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            entries.append((p, Path(p.name)))
        else:
            errors.append(f"{p}: no such file or folder")
    keys = [rel.parent / rel.stem for _, rel in entries]
    counts: dict[Path, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    keys = [
        k if counts[k] == 1 else k.parent / f"{rel.stem}_{rel.suffix.lstrip('.').lower()}"
        for k, (_, rel) in zip(keys, entries, strict=True)
    ]
    seen: dict[Path, Path] = {}
    for k, (f, _) in zip(keys, entries, strict=True):
        if k in seen and seen[k].resolve() != f.resolve():
            raise ValueError(
                f"inputs {seen[k]} and {f} would both write {out / k}_*; "
                "pass their folders instead of the files, or parse them in separate runs"
            )
        seen[k] = f
    jobs, done = [], set()
    for k, (f, _) in zip(keys, entries, strict=True):
        if k not in done:  # the same file given twice
            done.add(k)
            jobs.append(Job(f, k))
    return jobs + streams, errors


# ---------------------------------------------------------------------------------------------- parse
def _err(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"fpliif parse: {msg}", file=sys.stderr)


def build_parser_from_args(args: argparse.Namespace) -> Any:
    from .detect import make_detector
    from .parser import FaceParser

    detector = make_detector("haar", profile=True) if args.profile_faces else make_detector(args.detector)
    common = dict(
        detector=detector,
        align=not args.no_align,
        context=not args.no_context,
        feather=args.feather,
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
        max_decode_size=args.max_decode_size or None,
        tta=args.tta,
        decode=args.decode,  # None: the model's default (adaptive for FP-LIIF, dense for dense models)
        max_pixels=args.max_pixels,
        max_points=args.max_points,
        amp=args.amp,
    )
    if args.backend == "onnxruntime":
        return FaceParser.from_onnx(args.onnx, **common)
    return FaceParser.from_pretrained(args.weights, **common)


def _check_limits(args: argparse.Namespace) -> None:
    """--max-pixels / --max-points, and an explicit --aligned --size against them (before any work)."""
    from .. import limits

    max_pixels = limits.resolve_limit(args.max_pixels, "--max-pixels", limits.default_max_pixels)  # $FPLIIF_...
    if args.size is None or not args.aligned:
        return
    max_points = limits.resolve_limit(args.max_points, "--max-points", limits.DEFAULT_MAX_POINTS)
    n = args.size * args.size
    if max_pixels is not None and n > max_pixels:
        raise ValueError(
            f"--size {args.size}: a {args.size}x{args.size} output is {n:,} pixels, more than the limit of "
            f"{max_pixels:,} (--max-pixels or $FPLIIF_MAX_PIXELS; 0: no limit)"
        )
    points = n * (2 if args.tta else 1)
    if max_points is not None and points > max_points:
        raise ValueError(
            f"--size {args.size}: a {args.size}x{args.size} output{' with --tta' if args.tta else ''} needs "
            f"{points:,} decoder queries per image, more than the limit of {max_points:,} (--max-points; 0: no limit)"
        )


def _check_args(args: argparse.Namespace) -> None:
    if args.profile_faces and args.detector != "haar":
        raise ValueError("--profile-faces applies to the Haar detector: add --detector haar")
    if args.backend is None:
        args.backend = "onnxruntime" if args.onnx else "torch"
    if args.backend == "onnxruntime":
        if not args.onnx:
            raise ValueError("--backend onnxruntime needs --onnx model.onnx (write one with `fpliif export onnx`)")
        if args.weights:
            raise ValueError("--weights applies to the torch backend; the --onnx file carries its own weights")
    elif args.onnx:
        raise ValueError("--onnx needs --backend onnxruntime")
    if args.size is not None and not args.aligned:
        raise ValueError(
            "--size sets the output size of --aligned crops; detected faces are always parsed "
            "at the original resolution"
        )
    _check_limits(args)
    check_output_path(args.out, "--out", folder=True)
    if args.video and args.aligned:
        raise ValueError("--video and --aligned cannot be combined")
    if args.max_frames is not None and not args.video:
        raise ValueError("--max-frames limits the frames of --video inputs; add --video")
    if args.labels is not None:
        try:
            get_label_set(args.labels)
        except ValueError as e:
            raise ValueError(f"--labels: {e}") from None
    if args.mask is not None:
        names = list(dict.fromkeys(n.strip() for text in args.mask for n in text.split(",") if n.strip()))
        if not names:
            raise ValueError("--mask: expected class names separated by commas, e.g. --mask hair,skin")
        if args.video:
            raise ValueError("--mask writes one PNG per image and cannot be combined with --video")
        files = [mask_file_name(n) for n in names]
        if len(set(files)) < len(files):
            raise ValueError(f"--mask: names {names} give the same file name twice")
        args.mask = names
        if args.labels is not None:
            _output_label_set(get_label_set(args.labels), args)
    if args.example:
        args.inputs = [*args.inputs, str(example_image())]
    if not args.inputs:
        raise ValueError("no INPUT given (image files, folders or, with --video, videos); try --example")


def _output_label_set(model_set: LabelSet, args: argparse.Namespace) -> LabelSet:
    """The label set outputs are written in (``--labels``, else the model's); checks ``--mask`` against it."""
    target = model_set
    if args.labels is not None:
        try:
            model_set.remap_to(args.labels)
        except ValueError as e:
            raise ValueError(f"--labels: {e}") from None
        target = get_label_set(args.labels)
    if args.mask:
        try:
            target.indices(args.mask)
        except ValueError as e:
            raise ValueError(f"--mask: {e}") from None
    return target


def _write_image_outputs(res: Any, paths: dict[str, Path], alpha: float) -> None:
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


def _aligned_check(parser: Any, args: argparse.Namespace, path: Path) -> Any:
    """With --aligned: a ``load_image`` check of the output an input's header implies (its own size without
    --size) against the limits, so an oversized input is refused before it is decoded; else None."""
    if not args.aligned:
        return None

    def check(h: int, w: int) -> None:
        size = (args.size, args.size) if args.size else (h, w)
        parser.check_aligned_output(*size, args.tta, str(path), implied=not args.size)

    return check


def cmd_parse(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    _check_args(args)
    parser = None
    if args.mask or args.labels:  # check the names against the model's classes before any work
        parser = build_parser_from_args(args)
        _output_label_set(parser.label_set, args)
    out = Path(args.out)
    jobs, errors = plan_jobs(args.inputs, out, args.video)
    for e in errors:
        _err(e)
    failed, refused = len(errors), 0
    todo: list[tuple[Job, dict[str, Path]]] = []
    for job in jobs:
        paths = job.outputs(out, args.format, args.overlay, video=args.video, masks=args.mask or ())
        existing = [p for p in paths.values() if p.exists()]
        if existing and not args.overwrite:
            _err(f"refused {job.path}: {existing[0]} already exists (pass --overwrite to replace)")
            refused += 1
            continue
        todo.append((job, paths))
    if not todo:
        _err(f"nothing to do ({failed} failed, {refused} refused)")
        return 1
    if parser is None:
        parser = build_parser_from_args(args)
    if args.video:
        n_ok, n_fail = _parse_videos(parser, todo, args)
        failed += n_fail
    else:
        n_ok, n_fail = 0, 0
        bar = tqdm(total=len(todo), unit="img", file=sys.stderr, disable=args.quiet or len(todo) < 2, desc="parse")

        def run_group(group: list[tuple[Job, dict[str, Path], np.ndarray]]) -> None:
            nonlocal n_ok, n_fail
            try:
                images = [g[2] for g in group]
                if args.aligned:
                    size = (args.size, args.size) if args.size else None
                    results = parser.parse_aligned(images, size=size)
                else:
                    results = parser(images)
            except (ValueError, RuntimeError) as e:
                if isinstance(e, LimitError) and len(group) > 1:  # fail only the image over the limit
                    for g in group:
                        run_group([g])
                    return
                for job, _, _ in group:
                    _err(f"failed {job.path}: {e}")
                n_fail += len(group)
                bar.update(len(group))
                return
            for k, ((job, paths, _), res) in enumerate(zip(group, results, strict=True)):
                results[k] = None  # written outputs are dropped at once (bounded memory)
                if args.labels is not None:
                    res = res.remap(args.labels)
                res.source = str(job.path)
                try:
                    _write_image_outputs(res, paths, args.alpha)
                except OSError as e:
                    _err(f"failed {job.path}: cannot write outputs ({e})")
                    n_fail += 1
                    continue
                if not res.faces:
                    _err(f"{job.path}: no face detected; labels are all background")
                n_ok += 1
                bar.update(1)

        # Images are parsed in groups of up to --batch-size, and of at most GROUP_PIXELS pixels together (a
        # larger image alone), so a folder of big photos never holds several of them at once.
        group: list[tuple[Job, dict[str, Path], np.ndarray]] = []
        group_pixels = 0
        for job, paths in todo:
            try:
                image = load_image(job.path, args.max_pixels, _aligned_check(parser, args, job.path))
            except (ValueError, FileNotFoundError) as e:
                _err(f"skipped {job.path}: {e}")
                n_fail += 1
                bar.update(1)
                continue
            if group and group_pixels + image.shape[0] * image.shape[1] > GROUP_PIXELS:
                run_group(group)
                group, group_pixels = [], 0
            group.append((job, paths, image))
            group_pixels += image.shape[0] * image.shape[1]
            del image
            if len(group) >= args.batch_size:
                run_group(group)
                group, group_pixels = [], 0
        if group:
            run_group(group)
        group = []
        bar.close()
        failed += n_fail
    if not args.quiet:
        print(
            f"fpliif parse: {n_ok} {'video' if args.video else 'image'}(s) parsed into {out}/"
            + (f"; {failed} failed" if failed else "")
            + (f"; {refused} refused" if refused else ""),
            file=sys.stderr,
        )
    return 1 if failed or refused else 0


def _batched(items: Any, n: int) -> Any:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _parse_videos(parser: Any, todo: list[tuple[Job, dict[str, Path]]], args: argparse.Namespace) -> tuple[int, int]:
    ok = fail = 0
    for job, paths in todo:
        try:
            n, backend = _parse_video(parser, job, paths, args)
        except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
            _err(f"failed {job.source or job.path}: {e}")
            fail += 1
            continue
        if not args.quiet:
            name = job.source or job.path
            print(f"fpliif parse: {name}: {n} frames -> {paths['overlay']} ({backend})", file=sys.stderr)
        ok += 1
    return ok, fail


def _parse_video(parser: Any, job: Job, paths: dict[str, Path], args: argparse.Namespace) -> tuple[int, str]:
    """Parse one video frame by frame: overlay video, per-frame labels, optional JSON; (frames, writer).
    Faces are detected per frame and their boxes and landmarks smoothed over time (``--no-smooth``: raw)."""
    import json

    from tqdm import tqdm

    from .result import save_index_png
    from .tracking import FaceTracker
    from .video import VideoWriter, read_frames

    frames, fps, count = read_frames(job.source or job.path, max_frames=args.max_frames)
    tracker = None if args.no_smooth else FaceTracker(fps)
    frame_dir = paths["frames"]
    frame_dir.mkdir(parents=True, exist_ok=True)
    records = []
    total = count if count > 0 else None
    index = 0
    with (
        tqdm(total=total, unit="frame", file=sys.stderr, disable=args.quiet, desc=job.key.name) as bar,
        VideoWriter(paths["overlay"], fps) as writer,
    ):
        for batch in _batched(frames, args.batch_size):
            boxes = None if tracker is None else [tracker(parser.detect(frame)) for frame in batch]
            for res in parser(batch, boxes=boxes):
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
                index += 1
                bar.update(1)
    if "json" in paths:
        doc = {"video": job.source or str(job.path), "fps": fps, "frames": records}
        paths["json"].write_text(json.dumps(doc, indent=2) + "\n")
    return index, writer.backend


# ---------------------------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from ..models.checkpoint import input_size_of, load
    from .onnx_export import export_files, export_onnx, onnx_max_diff

    if args.format != "onnx":
        raise ValueError(f"export: unknown format {args.format!r}; supported: onnx")
    out = Path(args.out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--out: expected a .onnx file name, got {out}")
    model = load(args.weights)
    files = export_files(model, out, split=not args.single_graph)
    existing = [str(f) for f in files if f.exists()]
    if existing and not args.overwrite:
        raise ValueError(f"{', '.join(existing)} already exists (pass --overwrite to replace)")
    size = args.size or input_size_of(model)
    split = not args.single_graph
    export_onnx(model, out, input_size=size, dynamic=args.dynamic, opset=args.opset, split=split, int8=args.int8)
    shape = "dynamic" if args.dynamic else f"{size}x{size}"
    written = " + ".join(f"{f} ({f.stat().st_size / 1e6:.1f} MB)" for f in files)
    msg = f"wrote {written}; input {shape}"
    try:
        msg += f"; onnxruntime vs torch max |logit diff| {onnx_max_diff(model, out, size):.2e}"
    except ImportError:
        msg += "; onnxruntime not installed, not verified"
    print(msg)
    return 0


# ---------------------------------------------------------------------------------------------- argparse
def add_commands(sub: argparse._SubParsersAction) -> None:
    from ..adaptive import DEFAULT_DECODE

    p = sub.add_parser(
        "parse",
        help="parse face photos, folders or videos into per-pixel labels",
        description="Per-pixel face-part labels for photos (faces detected, cropped like CelebAMask-HQ and "
        "pasted back at the original resolution), aligned crops (--aligned) or videos (--video).",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders (recursive) or videos")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--weights", help="bundled weights name or .safetensors file (default: bundled model)")
    p.add_argument(
        "--size", type=int_arg(1), default=None, help="output size N x N for --aligned (default: each input's size)"
    )
    p.add_argument(
        "--format",
        choices=["png", "npy", "json"],
        default="png",
        help="png: index PNG with palette; npy: uint8 array; json: summary + index PNG",
    )
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png with a legend")
    p.add_argument(
        "--mask",
        action="append",
        metavar="CLASS[,CLASS...]",
        help="also write one binary PNG per named class, <stem>_mask_<class>.png (255 = the class); names of "
        "the output label set (--labels, else the model's), e.g. --mask hair,skin",
    )
    p.add_argument(
        "--labels",
        metavar="SET",
        default=None,
        help="write labels, overlay and masks in this label set, merged from the model's classes: "
        f"{', '.join(sorted(LABEL_SETS))} (default: the model's own; see fpliif.labels.REMAPS)",
    )
    p.add_argument("--alpha", type=float_arg(0, 1), default=0.5, help="overlay opacity in [0, 1] (0.5)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int_arg(1), default=8, help="images (and face crops) per model call")
    p.add_argument("--threads", type=int_arg(1, MAX_THREADS), default=None, help="CPU threads for torch / onnxruntime")
    p.add_argument(
        "--aligned",
        action="store_true",
        help="inputs are aligned face crops (CelebAMask-HQ framing): no face detection",
    )
    p.add_argument(
        "--video",
        action="store_true",
        help="inputs are videos, camera indices (0) or stream URLs OpenCV can open: parse frame by frame",
    )
    p.add_argument(
        "--no-smooth", action="store_true", help="videos: raw detections per frame (default: smoothed over time)"
    )
    p.add_argument(
        "--max-frames",
        type=int_arg(1),
        default=None,
        metavar="N",
        help="videos: parse at most the first N frames of each (default: all; live sources: until Ctrl-C)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        default=None,
        help="torch (default) or onnxruntime (needs --onnx)",
    )
    p.add_argument("--onnx", help="ONNX file from `fpliif export onnx` (implies --backend onnxruntime)")
    p.add_argument(
        "--detector",
        choices=["mtcnn", "haar"],
        default="mtcnn",
        help="face detector: mtcnn (default: CNN with 5 landmarks, bundled) or haar (OpenCV Haar cascades, "
        "no landmarks: crops are not rolled); see docs/detection.md",
    )
    p.add_argument(
        "--no-align",
        action="store_true",
        help="do not roll the crops to level the eyes (by default each crop is rotated by the face's roll from "
        "the landmarks, and the labels pasted back through the inverse rotation)",
    )
    p.add_argument(
        "--no-context",
        action="store_true",
        help="labels end at each face's crop window (by default a second window, 1.5 times as large, labels hair, "
        "hat, neck and clothes beyond it; it costs one more encoder pass and counts against --max-points)",
    )
    p.add_argument(
        "--feather",
        type=float_arg(0, 1),
        default=CONTEXT_FEATHER,
        help="with the context window: the width of the face window's outer band, in half-sides of the window, "
        f"where its labels are blended into the context window's (0 to 1; default {CONTEXT_FEATHER}; 0: a hard "
        "switch at the window's edge)",
    )
    p.add_argument(
        "--profile-faces",
        action="store_true",
        help="with --detector haar: also try OpenCV's profile-face cascade where no frontal face is found",
    )
    p.add_argument(
        "--max-decode-size",
        type=int_arg(0),
        default=512,
        help="crops larger than this many pixels are decoded at this size and upsampled (0: never)",
    )
    p.add_argument(
        "--max-pixels",
        type=int_arg(0),
        default=None,
        help="refuse images (read from the header, before decoding) and --aligned outputs with more pixels "
        "(default: $FPLIIF_MAX_PIXELS or 40000000, the same limit as fpliif serve; 0: no limit)",
    )
    p.add_argument(
        "--max-points",
        type=int_arg(0),
        default=None,
        help="refuse an image whose faces need more decoder queries (output pixels of each face, x2 with --tta; "
        "default 16777216, a 4096x4096 aligned output; 0: no limit)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="flip test-time augmentation: average the probabilities of each crop and its mirror "
        "(left/right classes swapped back); 2x the cost",
    )
    p.add_argument(
        "--decode",
        choices=["dense", "adaptive"],
        default=None,
        help="dense: decode every output pixel (exact); adaptive: decode a coarse grid, then re-query the "
        "decoder only where the prediction is uncertain, coarse to fine (much faster, labels almost identical; "
        f"implicit models only); default: {DEFAULT_DECODE} for implicit models (FP-LIIF), dense for dense ones",
    )
    p.add_argument(
        "--amp",
        choices=["none", "auto", "bf16", "int8"],
        default="none",
        help="torch precision: none = fp32 (default); bf16 autocast; auto = bf16 where the CPU has it natively; "
        "int8 = decoder MLP dynamically quantised (CPU)",
    )
    p.add_argument("--example", action="store_true", help="add the bundled example photo to the inputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser(
        "export",
        help="export the model (encoder + implicit decoder; dense models: one graph) to ONNX",
        description="Export to ONNX as two graphs: OUT (encoder: image (B,3,H,W) in [0,1] -> cells, the latent "
        "grid) and OUT's NAME.decoder.onnx (cells + coords (B,Q,2) (x, y) in [-1,1] -> logits (B,Q,C)); the "
        "encoder runs once per face, Q is dynamic, so the pair serves any output size. Load the pair by "
        "OUT (--onnx OUT). --single-graph writes one graph image + coords -> logits instead. Dense models "
        "(SegFace, STN-iCNN) export as one graph image (B,3,N,N) -> logits (B,C,N,N) at the input size N "
        "(--dynamic: the batch only).",
    )
    p.add_argument("format", choices=["onnx"], help="export format")
    p.add_argument("--out", required=True, help="output .onnx file (the decoder goes beside it)")
    p.add_argument("--weights", help="bundled weights name or .safetensors file (default: bundled model)")
    p.add_argument("--size", type=input_size_arg, default=None, help="input image size N (default: the model's, 256)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch and input height/width")
    p.add_argument(
        "--single-graph", action="store_true", help="one graph image + coords -> logits (re-encodes per call)"
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="quantise the decoder graph's hidden MLP layers to int8 (onnxruntime dynamic quantisation; "
        "accuracy and speed: docs/performance.md)",
    )
    p.add_argument("--opset", type=int_arg(7), default=17, help="ONNX opset version (17)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)
