"""``fpliif parse``: images, folders, aligned crops and videos into per-pixel labels.

The options and their checks (all made before any image is parsed: a bad option is a usage error, exit code 2),
the model built from them, and the image loop; the files read and written are :mod:`.cli_files`'s, videos
:mod:`.cli_video`'s. ``--labels lapa|helen|coarse|inner|celebamask-hq`` writes every output in that label set
(index PNG and palette, npy, JSON class shares, overlay, and the names ``--mask`` takes), remapped from the model's
classes by :func:`fpliif.labels.remap_labels`; unknown ``--labels``/``--mask`` names are usage errors.

Unreadable files are reported on stderr (file and reason) and skipped. Existing outputs are never replaced
without ``--overwrite``: such inputs are refused with a message. Exit code: 0 if every input was parsed, 1 if any
failed or was refused, 2 for usage errors. ``--no-progress`` silences the progress bar and the summary lines
(``--quiet``, its former name, is still accepted and hidden from ``--help``).

This module imports torch only for the torch backend, so ``--backend onnxruntime`` runs on onnxruntime.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import limits
from ..cli import check_output_path, device_options, progress_options, threads_options, weights_options
from ..labels import LABEL_SETS, LabelSet, get_label_set
from ..precision import DEFAULT_INFERENCE_AMP
from ..validate import MAX_THREADS, cpu_count, float_arg, int_arg
from .cli_files import (
    Job,
    example_image,
    mask_file_name,
    no_face_reported_per_input,
    plan_jobs,
    report,
    write_image_outputs,
)
from .cli_video import parse_videos
from .framing import CONTEXT_FEATHER
from .images import VIDEO_EXTENSIONS, load_image

GROUP_PIXELS = 16_000_000
"""Most pixels of the images parsed together (a larger image is parsed alone): bounds a folder run's memory."""


# ---------------------------------------------------------------------------------------------- checks
def _check_args(args: argparse.Namespace) -> None:
    """Every option checked and resolved (``--backend``, ``--mask`` names, ``--example``) before any work."""
    _check_model_options(args)
    if args.size is not None and not args.aligned:
        raise ValueError(
            "--size sets the output size of --aligned crops; detected faces are always parsed "
            "at the original resolution"
        )
    _check_limits(args)
    if 0 < args.max_decode_size < 8:
        raise ValueError(f"--max-decode-size: expected 0 (never) or an integer >= 8, got {args.max_decode_size}")
    check_output_path(args.out, "--out", folder=True)
    if args.video and args.aligned:
        raise ValueError("--video and --aligned cannot be combined")
    if args.max_frames is not None and not args.video:
        raise ValueError("--max-frames limits the frames of --video inputs; add --video")
    if args.processes > 1 and (args.video or args.device != "cpu"):
        raise ValueError("--processes: parallel processes parse images on the CPU (not --video, not --device cuda)")
    _check_label_options(args)
    if args.example:
        args.inputs = [*args.inputs, str(example_image())]
    if not args.inputs:
        raise ValueError("no INPUT given (image files, folders or, with --video, videos); try --example")


def _check_model_options(args: argparse.Namespace) -> None:
    """--profile-faces against --detector; --backend resolved from --onnx and checked against --weights."""
    if args.profile_faces and args.detector != "haar":
        raise ValueError("--profile-faces applies to the Haar detector: add --detector haar")
    if args.second_chance and args.detector != "mtcnn":
        raise ValueError("--second-chance applies to the MTCNN detector (--detector mtcnn, the default)")
    if args.any_orientation and args.detector != "mtcnn":
        raise ValueError(
            "--any-orientation turns faces upright by their landmarks: it needs the MTCNN detector (--detector mtcnn, "
            "the default)"
        )
    if args.backend is None:
        args.backend = "onnxruntime" if args.onnx else "torch"
    if args.backend == "onnxruntime":
        if not args.onnx:
            raise ValueError("--backend onnxruntime needs --onnx model.onnx (write one with `fpliif export onnx`)")
        if args.weights:
            raise ValueError("--weights applies to the torch backend; the --onnx file carries its own weights")
    elif args.onnx:
        raise ValueError("--onnx needs --backend onnxruntime")


def _check_limits(args: argparse.Namespace) -> None:
    """--max-pixels / --max-points, and an explicit --aligned --size against them (before any work)."""
    max_pixels = limits.resolve_limit(args.max_pixels, "--max-pixels", limits.default_max_pixels)  # $FPLIIF_...
    if args.size is None or not args.aligned:
        return
    max_points = limits.resolve_limit(args.max_points, "--max-points", limits.DEFAULT_MAX_POINTS)
    n = args.size * args.size
    if max_pixels is not None and n > max_pixels:
        raise ValueError(
            f"--size {args.size}: a {args.size}x{args.size} output is {n:,} pixels, more than the limit of "
            f"{max_pixels:,} (--max-pixels or $FPLIIF_MAX_PIXELS; --max-pixels 0: no limit)"
        )
    points = n * (2 if args.tta else 1)
    if max_points is not None and points > max_points:
        raise ValueError(
            f"--size {args.size}: a {args.size}x{args.size} output{' with --tta' if args.tta else ''} needs "
            f"{points:,} decoder queries per image, more than the limit of {max_points:,} (--max-points; 0: no limit)"
        )


def _check_label_options(args: argparse.Namespace) -> None:
    """--labels names a label set; --mask names are split, deduplicated and give distinct file names."""
    if args.labels is not None:
        try:
            get_label_set(args.labels)
        except ValueError as e:
            raise ValueError(f"--labels: {e}") from None
    if args.mask is None:
        return
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


# ---------------------------------------------------------------------------------------------- run
def build_parser_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~fpliif.infer.parser.FaceParser` the options ask for (torch or onnxruntime backend)."""
    from .detect import make_detector
    from .parser import FaceParser

    detector = make_detector("haar", profile=True) if args.profile_faces else make_detector(args.detector)
    common = dict(
        detector=detector,
        align=not args.no_align,
        context=not args.no_context,
        feather=args.feather,
        drop_detached=not args.keep_detached,
        extend=args.extend is not False,  # None: on for images (videos pass their own default per call)
        second_chance=args.second_chance,
        any_orientation=args.any_orientation,
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


def cmd_parse(args: argparse.Namespace) -> int:
    """``fpliif parse``: exit code 0 if every input was parsed, 1 if any failed or was refused."""
    _check_args(args)
    with no_face_reported_per_input():
        return _parse_all(args)


def _parse_all(args: argparse.Namespace) -> int:
    parser = None
    if args.mask or args.labels:  # check the names against the model's classes before any work
        parser = build_parser_from_args(args)
        _output_label_set(parser.label_set, args)
    out = Path(args.out)
    jobs, errors = plan_jobs(args.inputs, out, args.video)
    for e in errors:
        report(e)
    todo, refused = _unrefused(jobs, out, args)
    failed = len(errors)
    if not todo:
        report(f"nothing to do ({failed} failed, {refused} refused)")
        return 1
    if args.processes > 1 and len(todo) > 1:
        n_ok, n_fail = _parse_in_processes(todo, args)
    else:
        parser = parser or build_parser_from_args(args)
        n_ok, n_fail = (parse_videos if args.video else _parse_images)(parser, todo, args)
    failed += n_fail
    if not args.no_progress:
        print(
            f"fpliif parse: {n_ok} {'video' if args.video else 'image'}(s) parsed into {out}/"
            + (f"; {failed} failed" if failed else "")
            + (f"; {refused} refused" if refused else ""),
            file=sys.stderr,
        )
    return 1 if failed or refused else 0


def _unrefused(jobs: list[Job], out: Path, args: argparse.Namespace) -> tuple[list[tuple[Job, dict[str, Path]]], int]:
    """The jobs with their output paths, less those whose outputs exist (without --overwrite); and how many
    were refused (each reported)."""
    todo, refused = [], 0
    inputs = {job.path.resolve() for job in jobs if job.source is None}
    for job in jobs:
        paths = job.outputs(out, args.format, args.overlay, video=args.video, masks=args.mask or ())
        try:
            existing = [p for p in paths.values() if p.exists()]
            clobbered = [p for p in existing if p.resolve() in inputs]
        except OSError as e:  # e.g. a name longer than the file system allows: this input only, not the run
            report(f"refused {job.path}: its outputs cannot be written ({e.strerror}: {e.filename})")
            refused += 1
            continue
        if clobbered:  # even with --overwrite: an input of this run is never written over
            report(f"refused {job.path}: its output {clobbered[0]} is an input of this run")
            refused += 1
            continue
        if existing and not args.overwrite:
            report(f"refused {job.path}: {existing[0]} already exists (pass --overwrite to replace)")
            refused += 1
            continue
        todo.append((job, paths))
    return todo, refused


def _aligned_check(parser: Any, args: argparse.Namespace, path: Path) -> Any:
    """With --aligned: a ``load_image`` check of the output an input's header implies (its own size without
    --size) against the limits, so an oversized input is refused before it is decoded; else None."""
    if not args.aligned:
        return None

    def check(h: int, w: int) -> None:
        size = (args.size, args.size) if args.size else (h, w)
        parser.check_aligned_output(*size, args.tta, str(path), implied=not args.size)

    return check


def _parse_images(parser: Any, todo: list[tuple[Job, dict[str, Path]]], args: argparse.Namespace) -> tuple[int, int]:
    """Parse every image job into its output paths; (parsed, failed)."""
    return _ImageRun(parser, args, len(todo)).run(todo)


def _parse_in_processes(todo: list[tuple[Job, dict[str, Path]]], args: argparse.Namespace) -> tuple[int, int]:
    """--processes N: the image jobs parsed by N processes (spawned; each loads the model once and uses
    ``--threads`` threads, default its share of the CPUs), in chunks handed out as workers free up; (parsed,
    failed). Each worker reports its own failures; outputs are the same files as with one process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    n = min(args.processes, len(todo))
    worker_args = argparse.Namespace(**vars(args))
    worker_args.threads = args.threads or max(1, cpu_count() // n)
    worker_args.no_progress = True
    size = max(1, min(args.batch_size, math.ceil(len(todo) / (4 * n))))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    ok = failed = 0
    bar = tqdm(total=len(todo), unit="img", file=sys.stderr, disable=args.no_progress, desc=f"parse ({n} processes)")
    context = multiprocessing.get_context("spawn")  # torch and OpenCV are not fork-safe once threads started
    with ProcessPoolExecutor(n, mp_context=context, initializer=_start_worker, initargs=(worker_args,)) as pool:
        for future in as_completed([pool.submit(_worker_chunk, chunk) for chunk in chunks]):
            done, lost = future.result()
            ok, failed = ok + done, failed + lost
            bar.update(done + lost)
    bar.close()
    return ok, failed


_WORKER: dict[str, Any] = {}
"""A --processes worker's parser and options (set once by :func:`_start_worker`)."""


def _start_worker(args: argparse.Namespace) -> None:
    _WORKER.update(parser=build_parser_from_args(args), args=args)


def _worker_chunk(chunk: list[tuple[Job, dict[str, Path]]]) -> tuple[int, int]:
    """Parse one chunk of jobs in a worker process; (parsed, failed)."""
    with no_face_reported_per_input():
        return _parse_images(_WORKER["parser"], chunk, _WORKER["args"])


class _ImageRun:
    """Images parsed in groups of up to --batch-size and of at most :data:`GROUP_PIXELS` pixels together (a
    larger image alone), so a folder of big photos never holds several of them at once. Counts what was
    parsed (``ok``) and what failed (``failed``, each reported)."""

    def __init__(self, parser: Any, args: argparse.Namespace, total: int):
        from tqdm import tqdm

        self.parser, self.args = parser, args
        self.ok = self.failed = 0
        self.bar = tqdm(total=total, unit="img", file=sys.stderr, disable=args.no_progress or total < 2, desc="parse")

    def run(self, todo: list[tuple[Job, dict[str, Path]]]) -> tuple[int, int]:
        """Read, group, parse and write every job; (parsed, failed)."""
        group: list[tuple[Job, dict[str, Path], np.ndarray]] = []
        group_pixels = 0
        for job, paths in todo:
            try:
                image = load_image(job.path, self.args.max_pixels, _aligned_check(self.parser, self.args, job.path))
            except (ValueError, FileNotFoundError) as e:
                msg = str(e) if str(e).startswith(str(job.path)) else f"{job.path}: {e}"  # the path once
                hint = "; videos are parsed with --video" if job.path.suffix.lower() in VIDEO_EXTENSIONS else ""
                report(f"skipped {msg}{hint}")
                self.failed += 1
                self.bar.update(1)
                continue
            if group and group_pixels + image.shape[0] * image.shape[1] > GROUP_PIXELS:
                self._parse(group)
                group, group_pixels = [], 0
            group.append((job, paths, image))
            group_pixels += image.shape[0] * image.shape[1]
            del image
            if len(group) >= self.args.batch_size:
                self._parse(group)
                group, group_pixels = [], 0
        if group:
            self._parse(group)
        self.bar.close()
        return self.ok, self.failed

    def _parse(self, group: list[tuple[Job, dict[str, Path], np.ndarray]]) -> None:
        """Parse one group in one call and write its outputs; a group over a limit is retried image by image, so
        only the image over the limit fails."""
        try:
            images = [g[2] for g in group]
            if self.args.aligned:
                size = (self.args.size, self.args.size) if self.args.size else None
                results = self.parser.parse_aligned(images, size=size)
            else:
                results = self.parser(images)
        except (ValueError, RuntimeError) as e:
            if isinstance(e, limits.LimitError) and len(group) > 1:  # fail only the image over the limit
                for g in group:
                    self._parse([g])
                return
            for job, _, _ in group:
                report(f"failed {job.path}: {e}")
            self.failed += len(group)
            self.bar.update(len(group))
            return
        for k, ((job, paths, _), res) in enumerate(zip(group, results, strict=True)):
            results[k] = None  # written outputs are dropped at once (bounded memory)
            self._write(job, paths, res)

    def _write(self, job: Job, paths: dict[str, Path], res: Any) -> None:
        if self.args.labels is not None:
            res = res.remap(self.args.labels)
        res.source = str(job.path)
        try:
            write_image_outputs(res, paths, self.args.alpha)
        except OSError as e:
            report(f"failed {job.path}: cannot write outputs ({e})")
            self.failed += 1
            return
        if not res.faces:
            report(f"{job.path}: no face detected; labels are all background")
        self.ok += 1
        self.bar.update(1)


# ---------------------------------------------------------------------------------------------- options
def add_command(sub: argparse._SubParsersAction) -> None:
    """Add ``fpliif parse``."""
    p = sub.add_parser(
        "parse",
        parents=[
            weights_options(),
            device_options(),
            threads_options(),
            progress_options("progress bar or summary lines"),
        ],
        help="parse face photos, folders or videos into per-pixel labels",
        description="Per-pixel face-part labels for photos (faces detected, cropped like CelebAMask-HQ and "
        "pasted back at the original resolution), aligned crops (--aligned) or videos (--video).",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders (recursive) or videos")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--example", action="store_true", help="add the bundled example photo to the inputs")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", dest="no_progress", action="store_true", help=argparse.SUPPRESS)  # old --no-progress
    _output_options(p.add_argument_group("outputs"))
    _input_options(p.add_argument_group("inputs"))
    _face_options(p.add_argument_group("faces"))
    _model_options(p.add_argument_group("model"))
    _limit_options(p.add_argument_group("limits"))
    p.set_defaults(func=cmd_parse)


def _output_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--format",
        choices=["png", "npy", "json"],
        default="png",
        help="png: index PNG with palette; npy: uint8 array; json: summary + index PNG",
    )
    g.add_argument(
        "--overlay", action="store_true", help="also write <stem>_overlay.png with a legend (videos: always an .mp4)"
    )
    g.add_argument(
        "--mask",
        action="append",
        metavar="CLASS[,CLASS...]",
        help="also write one binary PNG per named class, <stem>_mask_<class>.png (255 = the class); names of "
        "the output label set (--labels, else the model's), e.g. --mask hair,skin",
    )
    g.add_argument(
        "--labels",
        metavar="SET",
        default=None,
        help="write labels, overlay and masks in this label set, merged from the model's classes: "
        f"{', '.join(sorted(LABEL_SETS))} (default: the model's own; see fpliif.labels.REMAPS)",
    )
    g.add_argument("--alpha", type=float_arg(0, 1), default=0.5, help="overlay opacity in [0, 1] (0.5)")


def _input_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--aligned",
        action="store_true",
        help="inputs are aligned face crops (CelebAMask-HQ framing): no face detection",
    )
    g.add_argument(
        "--size", type=int_arg(1), default=None, help="output size N x N for --aligned (default: each input's size)"
    )
    g.add_argument(
        "--video",
        action="store_true",
        help="inputs are videos, camera indices (0) or stream URLs OpenCV can open: parse frame by frame into "
        "<stem>_overlay.mp4 and <stem>_labels/NNNNNN.png (.npy with --format npy; + <stem>.json with --format json)",
    )
    g.add_argument(
        "--no-smooth", action="store_true", help="videos: raw detections per frame (default: smoothed over time)"
    )
    g.add_argument(
        "--max-frames",
        type=int_arg(1),
        default=None,
        metavar="N",
        help="videos: parse at most the first N frames of each (default: all; live sources: until Ctrl-C)",
    )


def _face_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--detector",
        choices=["mtcnn", "haar"],
        default="mtcnn",
        help="face detector: mtcnn (default: CNN with 5 landmarks, bundled) or haar (OpenCV Haar cascades, "
        "no landmarks: crops are not rolled); see docs/detection.md",
    )
    g.add_argument(
        "--profile-faces",
        action="store_true",
        help="with --detector haar: also try OpenCV's profile-face cascade where no frontal face is found",
    )
    g.add_argument(
        "--second-chance",
        action="store_true",
        help="with MTCNN: a second, wider detection pass whose new faces are kept only where the parser sees face "
        "parts (more turned, rolled and small faces; about 4x the detection time; docs/detection.md)",
    )
    g.add_argument(
        "--any-orientation",
        action="store_true",
        help="with MTCNN: also find faces turned on their side or upside down (a photo whose EXIF orientation is "
        "missing or wrong) by detecting on the 3 quarter turns too, and parse them turned upright (about 4x the "
        "detection time; docs/detection.md)",
    )
    g.add_argument(
        "--no-align",
        action="store_true",
        help="do not roll the crops to level the eyes (by default each crop is rotated by the face's roll from "
        "the landmarks, and the labels pasted back through the inverse rotation)",
    )
    g.add_argument(
        "--no-context",
        action="store_true",
        help="labels end at each face's crop window (by default a second window, 1.5 times as large, labels hair, "
        "hat, neck and clothes beyond it; it costs one more encoder pass and counts against --max-points)",
    )
    g.add_argument(
        "--feather",
        type=float_arg(0, 1),
        default=CONTEXT_FEATHER,
        help="with the context window: the width of the face window's outer band, in half-sides of the window, "
        f"where its labels are blended into the context window's (0 to 1; default {CONTEXT_FEATHER}; 0: a hard "
        "switch at the window's edge)",
    )
    g.add_argument(
        "--extend",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="continue clothes, hair and neck past the context windows where the photo does (GrabCut from the "
        "parser's own labels, up to half the window's side); default: on for images, off for videos (it adds "
        "label flicker); --no-extend: labels end at the windows",
    )
    g.add_argument(
        "--keep-detached",
        action="store_true",
        help="keep labelled regions that reach no face (by default a region of labels, e.g. 'hair' on a curtain, "
        "that holds no skin, eye, nose or mouth pixel inside a face's box becomes background)",
    )


def _model_options(g: argparse._ArgumentGroup) -> None:
    from ..adaptive import DEFAULT_DECODE

    g.add_argument(
        "--backend",
        choices=["torch", "onnxruntime"],
        default=None,
        help="torch (default) or onnxruntime (needs --onnx)",
    )
    g.add_argument("--onnx", help="ONNX file from `fpliif export onnx` (implies --backend onnxruntime)")
    g.add_argument("--batch-size", type=int_arg(1), default=8, help="images (and face crops) per model call")
    g.add_argument(
        "--processes",
        type=int_arg(1, MAX_THREADS),
        default=1,
        help="processes that parse images in parallel, each with its own model (default 1: this process); each "
        "uses --threads threads (default: its share of the CPUs). Much of a photo's parse runs on one thread, so "
        "on a multi-core CPU a folder goes faster with several processes; images only, on the CPU",
    )
    g.add_argument(
        "--decode",
        choices=["dense", "adaptive"],
        default=None,
        help="dense: decode every output pixel (exact); adaptive: decode a coarse grid, then re-query the "
        "decoder only where the prediction is uncertain, coarse to fine (much faster, labels almost identical; "
        f"implicit models only); default: {DEFAULT_DECODE} for implicit models (FP-LIIF), dense for dense ones",
    )
    g.add_argument(
        "--max-decode-size",
        type=int_arg(0),
        default=512,
        help="crops larger than this many pixels are decoded at this size and upsampled (0: never)",
    )
    g.add_argument(
        "--tta",
        action="store_true",
        help="flip test-time augmentation: average the probabilities of each crop and its mirror "
        "(left/right classes swapped back); 2x the cost",
    )
    g.add_argument(
        "--amp",
        choices=["none", "auto", "bf16", "int8"],
        default=DEFAULT_INFERENCE_AMP,
        help=f"torch precision: auto = bf16 where the CPU/GPU has it natively, else fp32 (default: "
        f"{DEFAULT_INFERENCE_AMP}); none = fp32 on every machine; bf16 autocast; int8 = decoder MLP dynamically "
        "quantised (CPU); the onnxruntime backend runs fp32",
    )


def _limit_options(g: argparse._ArgumentGroup) -> None:
    side = math.isqrt(limits.DEFAULT_MAX_POINTS)
    g.add_argument(
        "--max-pixels",
        type=int_arg(0),
        default=None,
        help="refuse images (read from the header, before decoding) and --aligned outputs with more pixels "
        f"(default: ${limits.MAX_PIXELS_ENV} or {limits.DEFAULT_MAX_PIXELS}, the same limit as fpliif serve; "
        "0: no limit)",
    )
    g.add_argument(
        "--max-points",
        type=int_arg(0),
        default=None,
        help="refuse an image whose faces need more decoder queries (output pixels of each face, x2 with --tta; "
        f"default {limits.DEFAULT_MAX_POINTS}, a {side}x{side} aligned output; 0: no limit)",
    )
