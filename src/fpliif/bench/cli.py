"""``fpliif info`` and ``fpliif bench``: what the model is and how fast it runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cli import device_options, input_size_arg, print_json, require_torch, threads_options, weights_options
from ..precision import AMP_CHOICES, DEFAULT_INFERENCE_AMP
from ..validate import int_arg, parse_int_list

if TYPE_CHECKING:  # torch is imported by the commands that run, not by argument parsing
    import torch


def weights_for(weights: str | None, model: str = "fpliif") -> str | None:
    """The weight file a command uses: --weights (a path or bundled name), else the bundled default for
    the default architecture, else None (a freshly initialised model)."""
    from ..models.pretrained import default_weights_path, resolve_weights

    if weights:
        return str(resolve_weights(weights))
    path = default_weights_path()
    return str(path) if path is not None and model == "fpliif" else None


def load_model(weights: str | None, model: str = "fpliif") -> torch.nn.Module:
    """The model of :func:`weights_for`, or a fresh registered ``model`` when there is no weight file."""
    from ..models import make
    from ..models.checkpoint import load

    if weights is not None and not weights.strip():
        raise ValueError("--weights: expected a weights file or bundled name, got an empty string")
    path = weights_for(weights, model)
    if path is None:
        return make(model)
    loaded = load(path)
    if weights and model != "fpliif" and loaded.spec["name"] != model:  # --model names fresh models' architecture
        raise ValueError(f"--model {model}: --weights {weights} is a {loaded.spec['name']} model; drop one of them")
    return loaded


def cmd_info(args: argparse.Namespace) -> int:
    from ..models import available
    from ..models.checkpoint import input_size_of
    from ..models.pretrained import weights_registry

    model = load_model(args.weights, args.model)
    info = {
        "model": model.spec["name"],
        "params": model.num_parameters(),
        "classes": list(model.classes),
        "label_set": model.label_set.name,
        "temperature": model.temperature,
        "input_size": input_size_of(model),
        "weights": weights_for(args.weights, args.model),
        "spec": model.spec,
        "registered_models": available(),
        "bundled_weights": sorted(weights_registry()),
    }
    if args.json:
        print_json(info)
    else:
        print(f"model      {info['model']}  ({info['params']:,} parameters)")
        print(f"weights    {info['weights'] or 'none (randomly initialised)'}")
        print(f"input      {info['input_size']}² (the size it was trained at)")
        print(f"classes    {len(info['classes'])}: {', '.join(info['classes'])}")
        print(f"registered {', '.join(info['registered_models'])}")
        print(f"bundled    {', '.join(info['bundled_weights']) or 'none'} (--weights NAME)")
    return 0


def parse_decode_modes(text: str | None) -> list[str] | None:
    """``--decode dense,adaptive`` -> ["dense", "adaptive"] (None when not given)."""
    if text is None:
        return None
    from ..adaptive import check_decode_mode

    modes = [check_decode_mode(m.strip(), "--decode") for m in text.split(",") if m.strip()]
    if not modes:
        raise ValueError(f"--decode: expected a comma-separated list of dense, adaptive, got {text!r}")
    return list(dict.fromkeys(modes))


TRAIN_ONLY = {"batch_size": 4, "queries": "full,2048", "steps": 3, "warmup": 1, "channels_last": False}
"""``fpliif bench --train`` options and their defaults."""
NOT_TRAIN = {"sizes": "64,96,128,192,256", "runs": 5}
"""Options of the inference benchmarks (not ``--train``) and their defaults."""


def _check_applicable(args: argparse.Namespace) -> None:
    """Options given for another kind of benchmark than the one that runs are refused by name, then the defaults
    of those that apply filled in."""
    given = [name for name in TRAIN_ONLY if getattr(args, name) not in (None, False)]
    if given and not args.train:
        raise ValueError(f"--{given[0].replace('_', '-')}: applies to --train (training throughput)")
    if args.train and args.sizes is not None:
        raise ValueError("--sizes: applies to inference benchmarks, not --train (its input is --input-size)")
    if args.train and args.runs is not None:
        raise ValueError("--runs: applies to inference benchmarks; --train times --steps steps per setting")
    for name, default in {**TRAIN_ONLY, **NOT_TRAIN}.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    from ..limits import DEFAULT_MAX_POINTS, check_points

    for size in [] if args.train else parse_int_list(args.sizes, "--sizes"):  # a dense decode of size² points
        check_points(size * size, DEFAULT_MAX_POINTS, f"--sizes {size}", "choose a smaller size")


def cmd_bench(args: argparse.Namespace) -> int:
    require_torch("it counts the MACs and points on the torch model, also with --onnx")
    _check_applicable(args)
    if args.models is not None:
        return cmd_bench_models(args)
    if args.train:
        if args.decode is not None:
            raise ValueError("--decode: applies to inference benchmarks, not --train")
        return cmd_bench_train(args)
    if args.photos:
        return cmd_bench_photos(args)
    from .inference import run_bench

    modes = parse_decode_modes(args.decode)
    onnx_model = None
    if args.backend == "onnxruntime" or args.onnx:
        if not args.onnx:
            raise ValueError("--backend onnxruntime: pass --onnx FILE (write one with `fpliif export onnx --dynamic`)")
        if args.backend == "torch":
            raise ValueError("--backend torch: --onnx FILE runs on onnxruntime; drop one of them")
        from ..infer.onnx_backend import OnnxModel

        onnx_model = OnnxModel(args.onnx, threads=args.threads)  # a split export: its default query chunks
        if not onnx_model.split:
            onnx_model.chunk_size = 1 << 20  # a single graph re-runs its encoder per chunk: the whole grid at once
    model = _model_of(args, onnx_model)
    if args.input_size is None:
        from ..models.checkpoint import input_size_of

        args.input_size = onnx_model.input_size if onnx_model is not None else input_size_of(model)
    result = run_bench(
        model,
        sizes=parse_int_list(args.sizes, "--sizes"),
        input_size=args.input_size,
        device=args.device,
        runs=args.runs,
        threads=args.threads,
        onnx_model=onnx_model,
        decode=modes,
        amp=args.amp or ("none" if onnx_model is not None else DEFAULT_INFERENCE_AMP),
        compile=args.compile,
    )
    if args.json:
        print_json(result)
    elif modes is not None:
        print(
            f"{result['model']}: {result['params']:,} params, input {args.input_size}² (example photo's face), "
            f"{result['device']}, {result['threads']} threads, backend {result['backend']}"
        )
        print(f"{'output':>8} {'decode':>9} {'GMACs run':>10} {'points':>9} {'FPS':>8}")
        for s in result["macs"]:
            for m in modes:
                print(
                    f"{s:>8} {m:>9} {result['macs_executed'][m][s] / 1e9:10.2f} {result['points'][m][s]:9d} "
                    f"{result['fps'][m][s]:8.2f}"
                )
    else:
        print(
            f"{result['model']}: {result['params']:,} params, input {args.input_size}², {result['device']}, "
            f"{result['threads']} threads, backend {result['backend']}"
        )
        print(f"{'output':>8} {'GMACs':>8} {'FPS':>8}")
        for s in result["macs"]:
            print(f"{s:>8} {result['macs'][s] / 1e9:8.2f} {result['fps'][s]:8.2f}")
    return 0


def _model_of(args: argparse.Namespace, onnx_model: Any) -> Any:
    """The torch model whose parameters and MACs the report counts: ``--weights``; with ``--onnx`` and no
    ``--weights``, the architecture the ONNX file records (counting only: the timings are onnxruntime's)."""
    from ..models import make

    if onnx_model is None or args.weights:
        model = load_model(args.weights, args.model)
        spec = None if onnx_model is None else onnx_model.metadata.get("fpliif_spec")
        if spec is not None and json.loads(spec) != model.spec:
            raise ValueError(f"--weights {args.weights} and --onnx {args.onnx} are different models; drop --weights")
        return model
    spec = onnx_model.metadata.get("fpliif_spec")
    if spec is None:
        raise ValueError(f"--onnx {args.onnx}: records no model spec; pass the weights it came from with --weights")
    return make(json.loads(spec))


def cmd_bench_models(args: argparse.Namespace) -> int:
    """``fpliif bench --models a,b``: several registered models side by side, each size as input and output."""
    from .inference import bench_models

    clash = [
        opt
        for opt, given in (
            ("--weights", args.weights),
            ("--train", args.train),
            ("--photos", args.photos),
            ("--decode", args.decode is not None),
            ("--onnx", args.onnx),
            ("--backend onnxruntime", args.backend == "onnxruntime"),
            ("--input-size", args.input_size is not None),
            ("--compile", args.compile),
        )
        if given
    ]
    if clash:
        raise ValueError(
            f"--models: benches fresh registered models at each --sizes N (input = output); drop {clash[0]}"
        )
    result = bench_models(
        args.models.split(","),
        sizes=parse_int_list(args.sizes, "--sizes"),
        device=args.device,
        runs=args.runs,
        threads=args.threads,
        amp=args.amp or "none",
    )
    if args.json:
        print_json(result)
        return 0
    print(f"{result['device']}, {result['threads']} threads, amp {result['amp']}, median of {args.runs} runs")
    print(f"{'model':<16} {'params':>11} {'size':>6} {'GMACs':>8} {'FPS':>8}")
    for name, r in result["models"].items():
        for s in r["macs"]:
            print(f"{name:<16} {r['params']:>11,} {s:>6} {r['macs'][s] / 1e9:8.2f} {r['fps'][s]:8.2f}")
    return 0


def cmd_bench_photos(args: argparse.Namespace) -> int:
    """``fpliif bench --photos``: the whole photo path, per photo and decode mode."""
    import torch

    from ..infer.parser import FaceParser
    from .inference import bench_photos, photo_files

    if args.train or args.backend == "onnxruntime" or args.onnx or args.compile:
        raise ValueError("--photos: times the torch FaceParser; drop --train/--backend/--onnx/--compile")
    modes = parse_decode_modes(args.decode) or ["dense", "adaptive"]
    photos = photo_files(args.photos)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    amp = args.amp or DEFAULT_INFERENCE_AMP
    parser = FaceParser.from_pretrained(weights_for(args.weights, args.model), device=args.device, amp=amp)
    result = bench_photos(parser, photos, modes, runs=args.runs)
    result["device"] = args.device
    result["amp"] = parser.backend.amp
    result["torch"] = torch.__version__
    if args.json:
        print_json(result)
        return 0
    print(f"{len(photos)} photos, {result['threads']} threads, median of {args.runs} runs (seconds per photo)")
    print(f"{'photo':<40} {'size':>11} {'faces':>5} " + " ".join(f"{m:>9}" for m in modes))
    for r in result["photos"]:
        size = "x".join(str(v) for v in r["size"][:2])
        cells = " ".join(f"{r['seconds'][m]:9.3f}" for m in modes)
        print(f"{Path(r['photo']).name[-40:]:<40} {size:>11} {r['faces']:>5} {cells}")
    print(f"{'photos/s':<58} " + " ".join(f"{result['photos_per_s'][m]:9.2f}" for m in modes))
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    """``fpliif bench --train``: training img/s for each (amp, queries) setting (see fpliif.bench.training)."""
    from ..models import make
    from ..models.checkpoint import input_size_of
    from ..train.step import objective_of
    from .training import train_throughput

    args.amp = args.amp or "none,auto"
    amps = [a.strip() for a in args.amp.split(",") if a.strip()]
    bad = [a for a in amps if a not in AMP_CHOICES]
    if not amps or bad:
        raise ValueError(f"--amp: expected a comma-separated list of {', '.join(AMP_CHOICES)}, got {args.amp!r}")
    queries: list[int | None] = []
    for q in (q.strip() for q in args.queries.split(",") if q.strip()):
        queries.append(None if q == "full" else parse_int_list(q, "--queries")[0])
    if not queries:
        raise ValueError(f"--queries: expected 'full' and/or positive integers, got {args.queries!r}")
    model = load_model(args.weights, args.model) if args.weights else make(args.model)
    spec, size = model.spec, args.input_size or input_size_of(model)  # the weights' own size, as inference
    if objective_of(model) != "queries":
        queries = [None]  # a dense model (or its own objective) trains on every pixel: --queries does not apply
    rows = []
    for amp in amps:
        for q in queries:
            r = train_throughput(
                spec,
                size=size,
                batch_size=args.batch_size,
                amp=amp,
                queries=q,
                channels_last=args.channels_last,
                steps=args.steps,
                warmup=args.warmup,
                threads=args.threads,
                device=args.device,
            )
            rows.append(r)
            if not args.json:
                print(
                    f"amp {r['amp']:>4}  queries {str(r['queries']):>6}  {r['img_per_s']:8.3f} img/s  "
                    f"({r['step_seconds']:.2f} s/step, batch {r['batch_size']}, {r['size']}²)",
                    flush=True,
                )
    keep = ("amp", "amp_requested", "objective", "queries", "channels_last", "batch_size", "size")
    keep += ("img_per_s", "step_seconds")
    result = {
        "train": [{k: r[k] for k in keep} for r in rows],
        "model": rows[0]["model"],
        "params": rows[0]["params"],
        "steps": args.steps,
        "warmup": args.warmup,
        "device": rows[0]["device"],
        "threads": rows[0]["threads"],
        "torch": _torch_version(),
    }
    if args.json:
        print_json(result)
    else:
        print(
            f"{result['model']}: {result['params']:,} params, {result['device']}, {result['threads']} threads, "
            f"median of {args.steps} steps after {args.warmup} warm-up"
        )
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", parents=[weights_options()], help="describe the default model (or --weights)")
    p.add_argument("--model", default="fpliif", help="registered architecture when no weights are given")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "bench",
        parents=[weights_options(), device_options(), threads_options()],
        help="parameters, MACs and FPS per output size",
    )
    p.add_argument("--model", default="fpliif")
    p.add_argument("--sizes", default=None, help="output sizes, comma-separated (64,96,128,192,256)")
    p.add_argument("--input-size", type=input_size_arg, default=None, help="model input N (default: the weights' own)")
    p.add_argument("--runs", type=int_arg(1), default=None, help="timed runs per size, median reported (5)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--backend",
        default=None,
        choices=["torch", "onnxruntime"],
        help="inference backend (default: onnxruntime with --onnx, else torch)",
    )
    p.add_argument("--onnx", help="ONNX file for --backend onnxruntime (from `fpliif export onnx --dynamic`)")
    p.add_argument(
        "--decode",
        default=None,
        help="decode modes to compare, comma-separated: dense,adaptive; reports fps, macs_executed and points "
        "per mode on the example photo's face",
    )
    p.add_argument(
        "--photos",
        nargs="+",
        metavar="DIR_OR_FILE",
        help="time the whole photo path (read, detect, crop, encode, decode, paste back) per photo, "
        "for each --decode mode (default dense,adaptive)",
    )
    p.add_argument(
        "--models",
        default=None,
        help="compare registered models (comma-separated, e.g. fpliif,segface_mnv3): fresh models, each --sizes N "
        "as input and output side, the same input for all; JSON: {models: {name: {params, macs, fps}}}",
    )
    p.add_argument("--train", action="store_true", help="training throughput (img/s) instead of inference FPS")
    p.add_argument("--batch-size", type=int_arg(1), default=None, help="--train: images per step (4)")
    p.add_argument(
        "--amp",
        default=None,
        help="autocast precision (auto = bf16 where the CPU/GPU has it natively, else fp32): inference, one of "
        "none, auto (default, as the parser; none with --models and onnxruntime), bf16, int8 (decoder MLP "
        "dynamically quantised, CPU); --train, comma-separated settings (default none,auto)",
    )
    p.add_argument(
        "--compile", action="store_true", help="time the torch model under torch.compile (needs a C++ compiler on CPU)"
    )
    p.add_argument("--queries", default=None, help="--train: 'full' grid and/or sampled queries per image (full,2048)")
    p.add_argument("--steps", type=int_arg(1), default=None, help="--train: timed steps per setting, median (3)")
    p.add_argument("--warmup", type=int_arg(0), default=None, help="--train: untimed warm-up steps per setting (1)")
    p.add_argument("--channels-last", action="store_true", help="--train: channels_last memory format")
    p.set_defaults(func=cmd_bench)
