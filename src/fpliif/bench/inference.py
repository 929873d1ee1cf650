"""Speed benchmark: parameters, MACs and frames per second per output size (``fpliif bench``).

With ``decode`` modes (``fpliif bench --decode dense,adaptive``) each mode is timed on the same input, the
bundled example photo's face framed as :class:`~fpliif.FaceParser` frames it (adaptive querying does less
work on a real face than on noise), and the MACs it executed and the query points it decoded are counted.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..adaptive import AdaptiveOptions, adaptive_decode, check_decode_mode
from ..models.checkpoint import DEFAULT_INPUT_SIZE
from ..precision import AMP_DTYPES, resolve_amp
from ..quantize import int8_decoder, swapped_tail
from .flops import count_macs, count_macs_of
from .runner import bench_device, device_name, time_calls


def measure_onnx_fps(model: Any, input_size: int, output_size: int, runs: int, warmup: int = 2) -> float:
    """Median frames/s of an :class:`~fpliif.infer.onnx_backend.OnnxModel` (numpy in, numpy out)."""
    image = np.random.default_rng(0).random((1, 3, input_size, input_size), dtype=np.float32)
    return 1.0 / time_calls(lambda: model(image, size=output_size), runs, warmup).median


def measure_fps(
    model: torch.nn.Module,
    input_size: int,
    output_size: int,
    device: torch.device,
    runs: int,
    warmup: int = 2,
    image: torch.Tensor | None = None,
) -> float:
    """Median frames/s of ``model(image, size)`` over ``runs`` timed runs after ``warmup`` runs (``image``: the
    (1, 3, N, N) input, default a random one of ``input_size``)."""
    if image is None:
        image = torch.rand(1, 3, input_size, input_size)
    image = image.to(device)
    with torch.inference_mode():
        return 1.0 / time_calls(lambda: model(image, size=output_size), runs, warmup, device).median


def bench_image(input_size: int) -> np.ndarray:
    """(1, 3, n, n) float32 model input: the bundled example photo's face, framed as the parser frames it."""
    from ..infer.cli_files import example_image
    from ..infer.detect import make_detector, nose_point, roll_degrees
    from ..infer.geometry import extract_crop, model_input
    from ..infer.images import load_image

    photo = load_image(example_image())
    detector = make_detector()
    faces = detector(photo)
    crop = photo
    if faces:
        box, _, landmarks = max(faces, key=lambda d: float(d[1]))
        crop = extract_crop(photo, detector.framing.window(box, roll_degrees(landmarks), nose_point(landmarks)))
    return model_input(crop, (input_size, input_size))[None]


def decode_once(model: torch.nn.Module, image: torch.Tensor, size: int, mode: str, options: Any = None) -> int:
    """Encode ``image`` and decode it at ``size`` x ``size`` with ``mode``; returns the query points decoded."""
    z = model.encode(image)
    if mode == "adaptive":
        _, stats = model.decode_adaptive(z, size, options=options)
        return stats.total
    model.decode_prepared(model.prepare(z), _pixel_grid(size, image))
    return image.shape[0] * size * size


def _pixel_grid(size: int, image: torch.Tensor) -> torch.Tensor:
    from ..models import pixel_centers

    return pixel_centers(size, size, device=image.device).unsqueeze(0).expand(image.shape[0], -1, -1)


def onnx_decode_once(model: Any, image: np.ndarray, size: int, mode: str, options: Any = None) -> int:
    """:func:`decode_once` on an :class:`~fpliif.infer.onnx_backend.OnnxModel` (encoder once, then queries)."""
    if mode == "adaptive":
        latent = model.encode(image)
        _, stats = adaptive_decode(
            lambda c: model.query(latent, c),
            (size, size),
            temperature=model.temperature,
            options=options,
            latent_size=model.latent_size(latent),
        )
        return stats.total
    model(image, size=size)
    return image.shape[0] * size * size


def bench_decode_modes(
    model: torch.nn.Module,
    modes: Sequence[str],
    sizes: Sequence[int],
    input_size: int,
    device: torch.device,
    runs: int,
    onnx_model: Any = None,
    options: AdaptiveOptions | None = None,
) -> dict[str, Any]:
    """``fps``, ``macs_executed``, ``points`` and ``first_call_s`` (seconds of the first, untimed call: with
    ``torch.compile`` it includes compiling) as {mode: {size: value}} on :func:`bench_image`.

    MACs and points are counted on the PyTorch model (the same network and queries as ``onnx_model``); with
    ``onnx_model``, adaptive decoding's points are those the ONNX model decoded (they depend on the weights, and
    the torch model may be the architecture alone: ``fpliif bench --onnx`` without ``--weights``), and its MACs
    the encoder's and latent grid's plus the torch decoder's MACs per point times those points
    (:func:`_mac_costs`).
    """
    options = AdaptiveOptions.of(options)
    array = bench_image(input_size)
    image = torch.from_numpy(array).to(device)
    fps: dict[str, dict[str, float]] = {}
    macs: dict[str, dict[str, int]] = {}
    points: dict[str, dict[str, int]] = {}
    first: dict[str, dict[str, float]] = {}
    costs: tuple[int, int] | None = None  # (encoder and latent grid, per point) MACs, for the ONNX adaptive rows
    with torch.inference_mode():
        for mode in modes:
            fps[mode], macs[mode], points[mode], first[mode] = {}, {}, {}, {}
            for s in sizes:
                if onnx_model is not None and mode == "adaptive":
                    run = functools.partial(onnx_decode_once, onnx_model, array, s, mode, options)
                    costs = costs or _mac_costs(model, image)
                    points[mode][str(s)] = run()
                    macs[mode][str(s)] = costs[0] + points[mode][str(s)] * costs[1]
                else:
                    run = functools.partial(decode_once, model, image, s, mode, options)
                    counted: list[int] = []
                    with _countable(model):  # the flop counter sees neither int8 ops nor compiled code
                        run()  # builds the bf16 decoder's cast weights first: their one-time probes are not counted
                        macs[mode][str(s)] = count_macs_of(lambda run=run, out=counted: out.append(run()))
                    points[mode][str(s)] = counted[0]
                    if onnx_model is not None:
                        run = functools.partial(onnx_decode_once, onnx_model, array, s, mode, options)
                timing = time_calls(run, runs, 2, device)
                fps[mode][str(s)], first[mode][str(s)] = 1.0 / timing.median, timing.first
    return {"fps": fps, "macs_executed": macs, "points": points, "first_call_s": first}


def _mac_costs(model: torch.nn.Module, image: torch.Tensor) -> tuple[int, int]:
    """MACs of encoding ``image`` and preparing its latent grid, and of decoding one query point (every point
    costs the decoder the same, wherever it lies)."""
    grids: list[Any] = []
    with _countable(model):
        fixed = count_macs_of(lambda: grids.append(model.prepare(model.encode(image))))
        one = count_macs_of(lambda: model.decode_prepared(grids[0], torch.zeros(1, 1, 2, device=image.device)))
    return fixed, one


@contextlib.contextmanager
def _countable(model: torch.nn.Module) -> Any:
    """Inside the block ``model`` runs eagerly (compiled code too) with its fp32 decoder MLP, where it decodes
    with an int8 one (:mod:`fpliif.quantize`): the same layers, counted as fp32 MACs."""
    int8 = getattr(model, "quantized_tail", None) is not None
    with torch.compiler.set_stance("force_eager"), swapped_tail(model, None) if int8 else contextlib.nullcontext():
        yield


def run_bench(
    model: torch.nn.Module,
    sizes: Sequence[int] = (64, 96, 128, 192, 256),
    input_size: int = DEFAULT_INPUT_SIZE,
    device: str = "cpu",
    runs: int = 5,
    threads: int | None = None,
    onnx_model: Any = None,
    decode: Sequence[str] | None = None,
    adaptive: AdaptiveOptions | None = None,
    amp: str = "none",
    compile: bool = False,
) -> dict[str, Any]:
    """Parameters, MACs and FPS of ``model`` for each output size, as a JSON-ready dict.

    ``amp``: the torch autocast precision of the timed runs (``none``, ``bf16``, or ``auto``: bf16 where the
    device computes it natively, :func:`fpliif.precision.resolve_amp`; ``int8``: fp32 with the decoder MLP
    dynamically quantised, :mod:`fpliif.quantize`, MACs counted as fp32); recorded as ``amp``.

    With ``onnx_model`` (an :class:`~fpliif.infer.onnx_backend.OnnxModel` of the same network) the FPS are
    measured on ONNX Runtime (CPU); MACs and parameters are the network's, counted on ``model``. ``macs`` are
    the architecture's MACs as the paper counts them (:func:`fpliif.bench.flops.count_macs`).

    ``decode`` (modes ``"dense"``/``"adaptive"``): ``fps`` becomes {mode: {size: FPS}} measured on the example
    photo's face (:func:`bench_image`), with ``macs_executed`` (MACs the model ran) and ``points`` (query
    points decoded) of the same shape (:func:`bench_decode_modes`; ``adaptive``: its options).

    ``compile``: time the model under ``torch.compile`` (:func:`fpliif.compiled.compile_model`; compilation
    happens in the warm-up runs and is not in ``fps``; with ``decode``, ``first_call_s`` has the first call's
    seconds, compilation included); recorded as ``compile``.
    """
    if input_size <= 0:
        raise ValueError(f"--input-size: must be positive, got {input_size}")
    modes = [check_decode_mode(m, "--decode") for m in decode] if decode is not None else None
    if modes is not None and not modes:
        raise ValueError("--decode: expected dense and/or adaptive, got nothing")
    if modes is not None and not all(callable(getattr(model, a, None)) for a in ("decode_adaptive", "prepare")):
        raise ValueError(f"--decode: needs an FP-LIIF model (implicit decoder), got {type(model).__name__}")
    dev = _bench_device(device, runs, threads)
    model = model.eval()
    macs = {str(s): count_macs(model, (input_size, input_size), s) for s in sizes}
    if onnx_model is not None and dev.type != "cpu":
        raise ValueError("--backend onnxruntime: benchmarks run on the CPU provider only (use --device cpu)")
    if compile:
        if onnx_model is not None:
            raise ValueError("--compile: applies to the torch backend, not onnxruntime")
        from ..compiled import compile_model

        compile_model(model, dev)
    extra: dict[str, Any] = {}
    amp = resolve_amp(amp, dev, inference=True)
    if onnx_model is not None and amp != "none":
        raise ValueError("--amp: applies to the torch backend (onnxruntime runs its graph in fp32)")
    with _autocast(dev, amp), int8_decoder(model, amp == "int8"):
        if modes is not None:
            model = model.to(dev)
            extra = bench_decode_modes(model, modes, sizes, input_size, dev, runs, onnx_model, adaptive)
            fps: dict[str, Any] = extra.pop("fps")
        elif onnx_model is not None:
            fps = {str(s): measure_onnx_fps(onnx_model, input_size, s, runs) for s in sizes}
        else:
            model = model.to(dev)
            fps = {str(s): measure_fps(model, input_size, s, dev, runs) for s in sizes}
    return {
        "model": getattr(model, "spec", {}).get("name", type(model).__name__),
        "params": sum(p.numel() for p in model.parameters()),
        "input_size": input_size,
        "macs": macs,
        "fps": fps,
        **extra,
        **({"decode": modes, "adaptive_options": asdict(AdaptiveOptions.of(adaptive))} if modes is not None else {}),
        "device": device_name(dev),
        "threads": threads if onnx_model is not None and threads else torch.get_num_threads(),
        "backend": "onnxruntime" if onnx_model is not None else "torch",
        **(
            {"onnx": str(onnx_model.path), "onnx_int8": "fpliif_int8" in onnx_model.metadata}
            if onnx_model is not None
            else {}
        ),
        "amp": amp,
        "compile": bool(compile),
        "runs": runs,
        "torch": torch.__version__,
    }


def _bench_device(device: str, runs: int, threads: int | None) -> torch.device:
    """Check ``--runs``, set the thread count; the torch device to run on (:func:`.runner.bench_device`)."""
    if runs <= 0:
        raise ValueError(f"--runs: must be positive, got {runs}")
    return bench_device(device, threads)


def _autocast(dev: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast to the resolved ``amp`` precision (a no-op for ``none``)."""
    dtype = AMP_DTYPES[amp]
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def check_model_names(names: Sequence[str], option: str = "--models") -> list[str]:
    """Registered model names, in order without repeats; ValueError naming ``option``, the closest name and
    the registered ones for an unknown name."""
    from ..models import available, check_name

    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise ValueError(f"{option}: expected comma-separated model names (registered: {available()})")
    return [check_name(n, option) for n in names]


def bench_models(
    names: Sequence[str],
    sizes: Sequence[int] = (256,),
    device: str = "cpu",
    runs: int = 5,
    threads: int | None = None,
    amp: str = "none",
    seed: int = 0,
) -> dict[str, Any]:
    """Parameters, MACs and FPS of several registered models side by side (``fpliif bench --models``).

    Each model is built with its default (paper) arguments and fresh weights; each size N is the **input and
    the output** side (N x N in, N x N logits out), every model gets the same seeded (1, 3, N, N) input, one
    process, one thread setting. ``macs`` are :func:`fpliif.bench.flops.count_macs` (FP-LIIF: as its paper counts
    them). Returns ``{"models": {name: {"params", "macs": {N: ...}, "fps": {N: ...}}}, ...}`` and the settings.
    """
    from ..models import make

    names = check_model_names(names)
    dev = _bench_device(device, runs, threads)
    amp = resolve_amp(amp, dev)
    images = {s: torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(seed)) for s in sizes}
    models: dict[str, Any] = {}
    for name in names:
        model = make(name).eval()
        macs = {str(s): count_macs(model, (s, s), s) for s in sizes}
        model = model.to(dev)
        with _autocast(dev, amp):
            fps = {str(s): measure_fps(model, s, s, dev, runs, image=images[s]) for s in sizes}
        models[name] = {"params": sum(p.numel() for p in model.parameters()), "macs": macs, "fps": fps}
    return {
        "models": models,
        "sizes": list(sizes),
        "runs": runs,
        "device": device_name(dev),
        "threads": torch.get_num_threads(),
        "amp": amp,
        "torch": torch.__version__,
    }


def photo_files(items: Sequence[str]) -> list[Path]:
    """Image files named by ``items`` (files, or folders searched recursively), in order, without repeats."""
    from ..infer.images import iter_image_files

    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = list(iter_image_files(p))
            if not found:
                raise ValueError(f"--photos: no image files in folder {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"--photos: {p} does not exist")
    return list(dict.fromkeys(files))


def bench_photos(parser: Any, photos: Sequence[Path], modes: Sequence[str], runs: int = 3, warmup: int = 1) -> dict:
    """Time the whole photo path per photo and decode mode: read the file, detect, crop, encode, decode at the
    original pixels, paste back (``parser(path, decode=mode)``). Median seconds per photo over ``runs``; with
    ``dense`` among the modes, the share of pixels each mode labels as dense does."""
    if runs <= 0 or warmup < 0:
        raise ValueError(f"--runs: must be positive, got {runs}")
    rows = []
    for path in photos:
        row: dict[str, Any] = {"photo": str(path), "seconds": {}}
        labels = {}
        for mode in modes:
            timing = time_calls(functools.partial(parser, str(path), decode=mode), runs, warmup)
            result = timing.last
            row["seconds"][mode] = timing.median
            row["size"] = list(result.labels.shape)
            row["faces"] = len(result.faces)
            labels[mode] = result.labels
        if "dense" in labels:
            row["agreement_with_dense"] = {m: float((v == labels["dense"]).mean()) for m, v in labels.items()}
        rows.append(row)
    total = {m: sum(r["seconds"][m] for r in rows) for m in modes}
    return {
        "photos": rows,
        "photos_per_s": {m: len(rows) / total[m] if total[m] > 0 else float("inf") for m in modes},
        "decode": list(modes),
        "runs": runs,
        "threads": torch.get_num_threads(),
    }
