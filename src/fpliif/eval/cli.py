"""``fpliif eval``: the paper's F1 / IoU table of a weight file on a dataset split."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..validate import int_arg, parse_int_list

if TYPE_CHECKING:  # torch is imported when the command runs, not by argument parsing
    import torch


DEFAULT_SIZES = "256,512"
DEFAULT_LOWRES = "64,96,128,192"
DEFAULT_BATCH = 16
PHOTO_EXCLUDES = ("sizes", "lowres", "input_size", "batch_size", "baseline", "compare_dense")
"""``fpliif eval`` options that do not apply to ``--photos`` (the parser decodes each image at its own size)."""


def model_input_size(model: Any, override: int | None) -> int:
    """--input-size, else the ``input_size`` the weights were trained at (file metadata), else
    :data:`~fpliif.models.checkpoint.DEFAULT_INPUT_SIZE`."""
    from ..models.checkpoint import input_size_of

    if override is not None:  # range-checked by argparse (fpliif.cli.input_size_arg)
        return override
    return input_size_of(model)


def default_split(layout: str) -> str:
    """``val`` for the generic ``folder`` layout, ``test`` for the official dataset layouts."""
    return "val" if layout == "folder" else "test"


def _load_model(weights: str | None, device: str) -> tuple[torch.nn.Module, str]:
    from ..models.checkpoint import load

    model = load(weights, device=device)
    return model, str(model.weights_metadata.path)


def check_data_args(args: argparse.Namespace) -> None:
    """Check ``--data`` folders, ``--classes`` and ``--cache``, and resolve ``--layout auto`` in place."""
    from ..data.layouts import check_cache_option, check_classes_option, label_set_for, resolve_layout

    for root in args.data:
        if Path(root).exists() and not Path(root).is_dir():
            raise ValueError(f"--data {root}: is a file; expected a dataset folder")
        if not Path(root).is_dir():
            raise FileNotFoundError(f"--data: dataset folder not found: {root}")
    args.layout = resolve_layout(list(args.data), args.layout)
    check_classes_option(args.classes, args.layout)
    check_cache_option(args.cache, args.layout)
    if args.classes:
        try:
            label_set_for("folder", classes=args.classes)
        except (ValueError, KeyError) as e:
            raise ValueError(f"--classes: {e.args[0] if isinstance(e, KeyError) and e.args else e}") from None


def dataset_for(
    args: argparse.Namespace,
    model: Any,
    weights: str,
    split: str,
    transform: Any,
    *,
    remap: bool = False,
    same_names: bool = False,
    limit: int | None = None,
) -> tuple[Any, Any, str, Any]:
    """The dataset of ``--data``/``--layout``/``--classes``/``--cache`` at ``split`` for ``model``, read through
    ``transform`` (None: images and masks at their own size): (dataset, label set, roots as text, the model's label
    set where its predictions are mapped to the data's, else None).

    ``remap``: a model whose label set differs from the data's is scored through the mapping between them
    (:data:`fpliif.labels.REMAPS`, e.g. the CelebAMask-HQ model on LaPa or Helen) where there is one. Otherwise
    ValueError / FileNotFoundError naming the argument when the data does not fit the model. ``same_names``: the
    dataset's classes must be the model's, in the same order (not only as many). ``limit``: its first images only.
    """
    from ..data import FaceParsingDataset
    from ..labels import REMAPS

    data_roots = args.data[0] if len(args.data) == 1 else list(args.data)
    data_text = ", ".join(args.data)
    extra = {"classes": args.classes} if args.classes else {}
    ds = FaceParsingDataset(data_roots, args.layout, split, transform=transform, cache=args.cache, **extra)
    label_set = getattr(ds, "label_set", None) or model.label_set
    predicted_as = None
    if tuple(label_set.classes) != tuple(model.classes) and remap and (model.label_set.name, label_set.name) in REMAPS:
        predicted_as = model.label_set
        print(
            f"fpliif {args.command}: the model predicts {model.label_set.name} classes; they are mapped to the "
            f"dataset's {label_set.name} classes before scoring (fpliif.labels.REMAPS)",
            file=sys.stderr,
        )
    elif label_set.num_classes != model.num_classes:
        hint = ""
        classes_txt = any(Path(r, "classes.txt").is_file() for r in args.data)
        if args.layout == "folder" and not args.classes and not classes_txt:
            hint = " (folder layout: give its classes with --classes or ROOT/classes.txt)"
        raise ValueError(
            f"label sets differ: the model ({weights}) predicts {model.num_classes} classes "
            f"({model.label_set.name}: {', '.join(model.classes)}) but the dataset ({args.layout} at "
            f"{data_text}) has {label_set.num_classes} ({label_set.name}: "
            f"{', '.join(label_set.classes)}){hint}"
        )
    elif tuple(label_set.classes) != tuple(model.classes) and same_names:
        raise ValueError(
            f"label sets differ: the model ({weights}) has classes {list(model.classes)}, the dataset "
            f"({args.layout} at {data_text}) {list(label_set.classes)}; fpliif {args.command} needs the same "
            "classes in the same order"
        )
    elif tuple(label_set.classes) != tuple(model.classes):
        print(
            f"fpliif {args.command}: warning: model classes {list(model.classes)} differ in name/order from the "
            f"dataset's {list(label_set.classes)}; scoring by index",
            file=sys.stderr,
        )
    if len(ds) == 0:
        raise ValueError(f"split {split!r} of {data_text} ({args.layout}) has no images")
    if limit is not None and limit < len(ds):
        import torch

        ds = torch.utils.data.Subset(ds, range(limit))
    return ds, label_set, data_text, predicted_as


def check_batch_work(sizes: list[int], batch_size: int, tta: bool) -> None:
    """Before the model loads: each row decodes a whole batch at once, ``batch_size`` x size² decoder queries (x2
    with TTA), with their float32 logits; at most :data:`fpliif.limits.DEFAULT_MAX_POINTS` (about 1.3 GB of
    logits for 19 classes). OverBudget (a ValueError) naming the options otherwise."""
    from ..limits import DEFAULT_MAX_POINTS, check_points

    for s in sizes:
        what = f"--sizes/--lowres {s} with --batch-size {batch_size}{' and --tta' if tta else ''}"
        hint = "lower --batch-size or the size"
        check_points(batch_size * s * s * (2 if tta else 1), DEFAULT_MAX_POINTS, what, hint, per="batch")


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from ..cli import check_output_path, print_json
    from ..labels import get_label_set

    _check_photo_options(args)
    if not args.photos:
        _fill_row_defaults(args)
    if args.out is not None:
        check_output_path(args.out, "--out", folder=False)
        if Path(args.out).exists() and not args.overwrite:
            raise ValueError(f"--out: {args.out} exists (pass --overwrite to replace it)")
        if args.weights and Path(args.weights).resolve() == Path(args.out).resolve():
            raise ValueError("--out: must differ from --weights (the weights are an input)")
    if args.score_labels:
        try:
            get_label_set(args.score_labels)
        except ValueError as e:
            raise ValueError(f"--score-labels: {e}") from None
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use --device cpu)")
    check_data_args(args)
    model, weights = _load_model(args.weights, args.device)
    split = args.split or default_split(args.layout)
    result, label_set = (_eval_photos if args.photos else _eval_rows)(args, model, weights, split)
    if args.score_labels:
        label_set = get_label_set(args.score_labels)  # the table's classes
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print_json(result)
    else:
        _print_report(result, args, label_set)
    return 0


def _check_photo_options(args: argparse.Namespace) -> None:
    """With ``--photos``, ValueError naming the given options that do not apply to it."""
    if args.photos:
        given = [f"--{name.replace('_', '-')}" for name in PHOTO_EXCLUDES if getattr(args, name) not in (None, False)]
        if given:
            raise ValueError(f"--photos: {', '.join(given)} do not apply (each image is parsed at its own size)")


def _fill_row_defaults(args: argparse.Namespace) -> None:
    """The defaults of the options of the paper's rows, then the rows' work checked (before the model loads)."""
    args.sizes = DEFAULT_SIZES if args.sizes is None else args.sizes
    args.lowres = DEFAULT_LOWRES if args.lowres is None else args.lowres
    args.batch_size = DEFAULT_BATCH if args.batch_size is None else args.batch_size
    sizes = parse_int_list(args.sizes, "--sizes", allow_empty=True)
    lowres = parse_int_list(args.lowres, "--lowres", allow_empty=True)
    if not sizes and not lowres:
        raise ValueError("--sizes and --lowres are both empty: nothing to evaluate")
    check_batch_work(sizes + lowres, args.batch_size, args.tta)


def _eval_rows(args: argparse.Namespace, model: Any, weights: str, split: str) -> tuple[dict[str, Any], Any]:
    """The paper's rows (squashed images and masks at each size): (result, the data's label set)."""

    from ..adaptive import default_decode
    from ..data import build_eval_transform, make_loader
    from ..models.checkpoint import DEFAULT_INPUT_SIZE  # the paper's 256: where low-res rows are upsampled to
    from .evaluate import evaluate, trivial_baseline

    sizes = parse_int_list(args.sizes, "--sizes", allow_empty=True)
    lowres = parse_int_list(args.lowres, "--lowres", allow_empty=True)
    decode = args.decode or ("adaptive" if args.compare_dense else default_decode(model))
    input_size = model_input_size(model, args.input_size)
    mask_sizes = sorted(set(sizes) | ({DEFAULT_INPUT_SIZE} if lowres else set()))
    transform = build_eval_transform(size=input_size, mask_sizes=mask_sizes)
    ds, label_set, data_text, predicted_as = dataset_for(
        args, model, weights, split, transform, remap=True, limit=args.limit
    )
    loader = make_loader(ds, args.batch_size, shuffle=False, num_workers=args.workers)
    result = evaluate(
        model,
        loader,
        label_set,
        sizes=sizes,
        lowres=lowres,
        device=args.device,
        progress=not args.no_progress,
        lowres_to=DEFAULT_INPUT_SIZE,
        tta=args.tta,
        decode=decode,
        compare_dense=args.compare_dense,
        score_as=args.score_labels,
        predicted_as=predicted_as,
    )
    result.update(
        {"weights": weights, "data": data_text, "layout": args.layout, "split": split, "input_size": input_size}
    )
    if args.baseline:
        base_size = sizes[0] if sizes else DEFAULT_INPUT_SIZE
        base = trivial_baseline(loader, label_set, size=base_size, device=args.device, score_as=args.score_labels)
        base_row = f"baseline:{base['predicted_class']}@{base_size}"
        result["baseline"] = {"row": base_row, **base}
        result["rows"][base_row] = {
            k: base[k] for k in ("mean_f1", "mean_iou", "pixel_acc", "per_class_f1", "per_class_iou") if k in base
        }
    return result, label_set


def _eval_photos(args: argparse.Namespace, model: Any, weights: str, split: str) -> tuple[dict[str, Any], Any]:
    """``--photos``: each image parsed as a photo by a FaceParser with its defaults: (result, the data's label
    set)."""

    from ..data import make_loader
    from ..infer.cli_files import no_face_reported_per_input
    from ..infer.parser import FaceParser
    from .photos import evaluate_photos

    parser = FaceParser(model, device=args.device, tta=args.tta, decode=args.decode)
    ds, label_set, data_text, predicted_as = dataset_for(
        args, model, weights, split, None, remap=True, limit=args.limit
    )
    samples = make_loader(ds, None, shuffle=False, num_workers=args.workers)  # one image at a time, own size
    with no_face_reported_per_input():
        result = evaluate_photos(
            parser,
            samples,
            label_set,
            score_as=args.score_labels,
            predicted_as=predicted_as,
            progress=not args.no_progress,
        )
    result.update({"weights": weights, "data": data_text, "layout": args.layout, "split": split})
    return result, label_set


def _print_report(result: dict[str, Any], args: argparse.Namespace, label_set: Any) -> None:
    """``fpliif eval``'s text output: what was evaluated, the table, adaptive decoding's agreement with dense."""
    from .evaluate import format_table

    print(f"weights {result['weights']}")
    print(f"data    {result['data']} ({args.layout}, split {result['split']}, {result['images']} images)")
    tta = "; flip TTA" if args.tta else ""
    adaptive = "; adaptive decoding" if result["decode"] == "adaptive" else ""
    if args.photos:
        print(f"photos  each image parsed as a photo at its own size (detect, align, crop, parse, paste back){tta}")
        missed = result["no_face"]
        print(
            f"faces   {result['faces']} found; {len(missed)} image(s) without a face, scored as all background"
            + (f": {', '.join(missed[:10])}{' ...' if len(missed) > 10 else ''}" if missed else "")
        )
    else:
        size = result["input_size"]
        print(f"input   {size}x{size} (outputs decoded from it at each row's size){tta}{adaptive}")
    if "predicted_as" in result:
        print(f"labels  the model's {result['predicted_as']} predictions mapped to the dataset's classes")
    print()
    print(format_table(result, label_set))
    for name, agree in result.get("agreement_with_dense", {}).items():
        dense = result["dense_rows"][name]["mean_f1"]
        print(
            f"row {name}: {agree:.3f}% of pixels as dense decoding labels them; dense mean F1 "
            f"{dense:.2f} (adaptive {result['rows'][name]['mean_f1']:.2f})"
        )
    if args.out:
        print(f"results written to {args.out}")


def cmd_calibrate(args: argparse.Namespace) -> int:
    import torch

    from ..cli import check_output_path, print_json
    from ..data import build_eval_transform, make_loader
    from ..models.checkpoint import WRITTEN_KEYS, save
    from .calibrate import apply_offsets, collect_logits, fit_offsets, strided

    check_output_path(args.out, "--out", folder=False)
    if Path(args.out).suffix.lower() != ".safetensors":
        raise ValueError(f"--out: expected a .safetensors file name (calibrate writes weights), got {args.out}")
    if Path(args.out).exists() and not args.overwrite:
        raise ValueError(f"--out: {args.out} exists (pass --overwrite to replace it)")
    if args.weights and Path(args.weights).resolve() == Path(args.out).resolve():
        raise ValueError("--out: must differ from --weights (the input weights are kept)")
    check_data_args(args)
    model, weights = _load_model(args.weights, "cpu")
    input_size = model_input_size(model, None)
    transform = build_eval_transform(size=input_size, mask_sizes=[args.size])
    ds, label_set, _, _ = dataset_for(args, model, weights, args.split, transform, same_names=True)
    ds = torch.utils.data.Subset(ds, strided(len(ds), args.images))
    loader = make_loader(ds, args.batch_size, shuffle=False, num_workers=args.workers)
    logits, labels = collect_logits(model, loader, args.size, progress=not args.no_progress)
    result = fit_offsets(logits, labels, label_set, images=len(ds))
    meta = {k: v for k, v in model.weights_metadata.items() if k not in WRITTEN_KEYS}
    meta.update(apply_offsets(model, result.offsets))
    meta["calibration"] = json.dumps(
        {
            "split": args.split,
            "images": len(ds),
            "size": args.size,
            "train_mean_f1_before": round(result.mean_f1_before, 3),
            "train_mean_f1_after": round(result.mean_f1_after, 3),
        }
    )
    save(model, args.out, metadata=meta)
    report = {"weights": weights, "out": args.out, **result.to_json()}
    if args.json:
        print_json(report)
    else:
        moved = {c: v for c, v in result.offsets.items() if v}
        print(
            f"{len(ds)} {args.split} images at {args.size}: mean F1 {result.mean_f1_before:.2f} -> "
            f"{result.mean_f1_after:.2f} with offsets {moved or 'none'}; wrote {args.out}"
        )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``fpliif eval`` and ``fpliif calibrate``."""
    _add_eval(sub)
    _add_calibrate(sub)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from ..adaptive import DEFAULT_DECODE
    from ..cli import device_options, input_size_arg, weights_options
    from ..data.cli import add_cache_option, dataset_options

    p = sub.add_parser(
        "eval",
        parents=[dataset_options(), weights_options(), device_options()],
        help="F1 / IoU table (paper Tables 1-3) on a dataset split",
        description="Evaluate a model on a dataset split at several output resolutions: rows '256' "
        "(native) and '512' decode the 256x256 input at that size; rows '64→256' etc. decode at "
        "the low resolution and upsample the logits bilinearly to 256. Mean F1 / mIoU exclude "
        "background; classes absent from both ground truth and prediction are undefined ('-') "
        "and left out of the means.",
    )
    p.add_argument(
        "--split",
        choices=["train", "val", "test", "all"],
        default=None,
        help="split to evaluate (default: test for the official layouts, val for 'folder')",
    )
    p.add_argument(
        "--classes",
        default=None,
        help="folder layout only: label-set name, comma-separated class names or a classes.txt "
        "(default: ROOT/classes.txt, else celebamask-hq)",
    )
    add_cache_option(p)
    p.add_argument(
        "--score-labels",
        metavar="SET",
        default=None,
        help="score in another label set, the confusion matrices remapped from the dataset's (e.g. "
        "inner: background + the eight inner parts, Helen's merged groups; how STN-iCNN is scored)",
    )
    p.add_argument("--sizes", default=None, help=f"native output sizes, one row each (default: {DEFAULT_SIZES})")
    p.add_argument(
        "--lowres",
        default=None,
        help=f"low output sizes upsampled to 256, one row each; '' disables (default: {DEFAULT_LOWRES})",
    )
    p.add_argument(
        "--photos",
        action="store_true",
        help="score the parser as users run it: each image parsed as a photo at its own size (detect, align, crop, "
        "parse, paste back; the parser's defaults) against its ground truth at that size, one row 'photo'; an "
        "image without a detected face counts as all background. Not with --sizes, --lowres, --input-size, "
        "--batch-size, --baseline or --compare-dense",
    )
    p.add_argument(
        "--baseline",
        action="store_true",
        help="add the trivial baseline row: every pixel = the split's most frequent class",
    )
    p.add_argument(
        "--input-size",
        type=input_size_arg,
        default=None,
        help="model input resolution (default: the size the weights were trained at, else 256)",
    )
    p.add_argument("--batch-size", type=int_arg(1), default=None, help=f"images per batch (default: {DEFAULT_BATCH})")
    p.add_argument("--limit", type=int_arg(1), default=None, help="evaluate only the first N images of the split")
    p.add_argument(
        "--tta",
        action="store_true",
        help="flip test-time augmentation: average the probabilities of each image and its mirror "
        "(left/right classes swapped back); 2x the cost",
    )
    p.add_argument(
        "--decode",
        choices=["dense", "adaptive"],
        default=None,
        help="dense: the implicit decoder at every output pixel (exact); adaptive: coarse to fine, "
        f"re-querying only near part boundaries (see docs/performance.md); default: {DEFAULT_DECODE} "
        "for models with an implicit decoder, dense for dense models (SegFace)",
    )
    p.add_argument(
        "--compare-dense",
        action="store_true",
        help="with --decode adaptive: also decode densely and report the pixel agreement and the "
        "dense scores (the accuracy check of adaptive querying)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON (only JSON on stdout)")
    p.add_argument("--out", help="also write the JSON results to this file")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_eval)


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    from ..cli import weights_options
    from ..data.cli import add_cache_option, dataset_options

    c = sub.add_parser(
        "calibrate",
        parents=[dataset_options(), weights_options()],
        help="fit per-class logit offsets on training images and write calibrated weights",
        description="Decode evenly spaced images of a split (default: train) densely and fit one logit offset "
        "per class that maximises their mean F1 (coordinate ascent); the offsets are added to the "
        "decoder's final bias, so every decoding path uses them. Corrects the label prior that "
        "class-balanced query sampling shifts (docs/training.md). Never calibrate on val.",
    )
    c.add_argument("--out", required=True, help="calibrated weight file to write (.safetensors)")
    c.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    c.add_argument(
        "--split",
        choices=["train", "val", "test", "all"],
        default="train",
        help="split to fit on (default: train; fitting on the split you report scores on is leakage)",
    )
    c.add_argument("--classes", default=None, help="folder layout only: label-set name or class list")
    add_cache_option(c)
    c.add_argument("--images", type=int_arg(1), default=320, help="images used, evenly spaced (default 320)")
    c.add_argument("--size", type=int_arg(8, 1024), default=256, help="output size decoded (default 256)")
    c.add_argument("--batch-size", type=int_arg(1), default=8)
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=cmd_calibrate)
