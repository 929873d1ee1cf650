"""Run an exported fpliif ONNX model with onnxruntime: numpy in, numpy out, no torch.

``fpliif export onnx`` writes two graphs (see :mod:`fpliif.infer.onnx_export`): the encoder ``NAME.onnx``
(``image`` (B, 3, H, W) float32 in [0, 1] -> ``cells``, the latent grid) and the decoder ``NAME.decoder.onnx``
(``cells`` + ``coords`` (B, Q, 2) float32 (x, y) in [-1, 1] at pixel centres -> ``logits`` (B, Q, C)), so the
encoder runs once per image however many query chunks follow. Single-graph files (``image`` + ``coords`` ->
``logits``, ``--single-graph``) load too. Class names, temperature and input size are in the files' metadata.

The files are untrusted: before anything runs, the graphs' inputs and outputs are checked against what the
backend feeds them (names, float32, ranks, RGB channels, a static input side within the bounds of weight
files), the classes in the metadata against the graph's logits, and a decoder graph against its encoder (the
latent grid's shape, the classes and the export id both files carry). Each refusal is one ValueError naming
the file. Query chunks stop at the deadline of :func:`fpliif.limits.scope`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..labels import HasLabelSet
from ..limits import check_deadline
from .geometry import pixel_centers

EXPORT_ID = "fpliif_export_id"
"""Metadata key both graphs of one split export carry (the same value): a decoder from another export is refused."""


CPU_SPLIT_CHUNK = 4096
"""Default query chunk of a split export's decoder graph on the CPU: with chunks of 65536 the graph's (65536, 256)
activations leave the cache (a 256² grid, 2 threads, interleaved: 0.84 s in chunks of 65536, 0.68 s of 16384,
0.63 s of 8192, 0.62 s of 4096, the same logits; scripts/query_block.py --onnx; docs/performance.md, "ONNX: two
graphs")."""


class OnnxModel(HasLabelSet):
    """An fpliif ONNX export on onnxruntime.

    ``model(image (B, 3, H, W) float32, size) -> logits (B, C, h, w)`` like the PyTorch model;
    ``model.decode_at(image, coords (B, Q, 2)) -> logits (B, Q, C)`` for arbitrary query points, or
    ``latent = model.encode(image)`` once, then ``model.query(latent, coords)`` as often as needed.
    ``path`` is the encoder file of a split export (its decoder file beside it) or a single-graph file.
    Queries run in chunks of ``chunk_size`` (a single graph re-runs its encoder for every chunk); default: on the
    CPU :data:`CPU_SPLIT_CHUNK` for a split export's decoder graph (cache-sized, like the torch model's query
    blocks), else 65536.
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        threads: int | None = None,
        chunk_size: int | None = None,
        providers: list[str] | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("the onnxruntime backend needs onnxruntime: pip install 'fpliif[onnx]'") from None
        from ..models.checkpoint import WeightsMetadata

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        if providers is None:
            available = ort.get_available_providers()
            if device == "cuda":
                if "CUDAExecutionProvider" not in available:
                    raise ValueError(
                        "device 'cuda' requested but onnxruntime has no CUDAExecutionProvider "
                        f"(available: {available}); install onnxruntime-gpu"
                    )
                providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            elif device in (None, "cpu"):
                providers = ["CPUExecutionProvider"]
            else:
                raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        self.session = _session(ort, path, providers, threads)
        self.path = path
        self.metadata = meta = WeightsMetadata.from_onnx(self.session.get_modelmeta().custom_metadata_map, path)
        self.label_set, self.temperature, self.input_size = meta.label_set, meta.temperature, meta.input_size
        self.chunk_size = 65536 if chunk_size is None else int(chunk_size)
        if not (self.temperature is None or self.temperature > 0):
            raise ValueError(f"{path}: metadata fpliif_temperature: expected a positive number, got {self.temperature}")
        if meta.get("fpliif_part") == "dense":
            raise ValueError(f"{path}: a dense model's export (image -> logits); this backend runs FP-LIIF exports")
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.decoder: Any = None
        if set(inputs) == {"cells", "coords"}:
            encoder = meta.get("fpliif_encoder", "the matching NAME.onnx")
            raise ValueError(f"{path}: this is the decoder half of a split export; load its encoder ({encoder})")
        if set(inputs) not in ({"image"}, {"image", "coords"}):
            raise ValueError(f"{path}: expected graph inputs 'image' (+ 'coords'), got {sorted(inputs)}")
        shape = _tensor(path, self.session.get_inputs(), "image", "input", (None, 3, None, None))
        self.static_batch = shape[0]
        self.static_hw = (shape[2], shape[3]) if None not in shape[2:] else None
        self._check_input_side()
        self.encoder_stride = _encoder_stride(path, meta.get("fpliif_spec"), self.input_size)
        if set(inputs) == {"image"}:
            self.decoder = self._load_decoder(ort, providers, threads)
            if chunk_size is None and providers[0] == "CPUExecutionProvider":
                self.chunk_size = CPU_SPLIT_CHUNK
        else:
            _tensor(path, self.session.get_inputs(), "coords", "input", (None, None, 2))
            self._check_logits(path, self.session)

    def _check_input_side(self) -> None:
        """A static input side within the weight files' bounds, equal to the metadata's ``fpliif_input_size``
        (the side the parser resizes crops to; taken from the graph where the metadata has none)."""
        from ..models.checkpoint import MAX_INPUT_SIZE, MIN_INPUT_SIZE

        if self.static_hw is None:
            return
        h, w = self.static_hw
        if not all(MIN_INPUT_SIZE <= s <= MAX_INPUT_SIZE for s in (h, w)):
            raise ValueError(
                f"{self.path}: graph input 'image' is {h}x{w}; expected sides in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}]"
            )
        if h == w and self.input_size is None:
            self.input_size = h
        elif h == w and self.input_size != h:
            raise ValueError(
                f"{self.path}: metadata fpliif_input_size {self.input_size} does not match the graph's static "
                f"{h}x{w} input (a damaged or edited export; export it again)"
            )

    def _check_logits(self, path: Path, session: Any) -> None:
        """The graph's ``logits`` output: (B, Q, C) float32 with C the number of classes in the metadata."""
        classes = _tensor(path, session.get_outputs(), "logits", "output", (None, None, None))[2]
        if classes is not None and classes != self.num_classes:
            raise ValueError(
                f"{path}: the graph outputs {classes} classes but the metadata fpliif_classes lists "
                f"{self.num_classes} ({self.path.name} and its decoder come from different exports?)"
            )

    def _load_decoder(self, ort: Any, providers: list[str], threads: int | None) -> Any:
        name = self.metadata.get("fpliif_decoder")
        if not name or Path(name).name != name:
            raise ValueError(f"{self.path}: an encoder graph without a valid fpliif_decoder file name ({name!r})")
        # NAME.decoder.onnx beside NAME.onnx (a pair renamed together), else the name it was exported with; the
        # export id check below refuses a decoder of another export either way
        paired = self.path.with_name(f"{self.path.stem}.decoder.onnx")
        dec_path = next((p for p in (paired, self.path.parent / name) if p.is_file()), None)
        if dec_path is None:
            names = paired.name if paired.name == name else f"{paired.name} (nor {name}, its name when exported)"
            raise FileNotFoundError(
                f"{self.path}: its decoder graph {names} is missing (a split export is two files, NAME.onnx and "
                "NAME.decoder.onnx; keep them together)"
            )
        session = _session(ort, dec_path, providers, threads)
        names = {i.name for i in session.get_inputs()}
        if names != {"cells", "coords"}:
            raise ValueError(f"{dec_path}: expected decoder inputs 'cells' and 'coords', got {sorted(names)}")
        self._check_pair(dec_path, session)
        return session

    def _check_pair(self, dec_path: Path, session: Any) -> None:
        """The decoder graph fits this encoder: the latent grid's shape, the classes, the export id."""
        cells = _tensor(self.path, self.session.get_outputs(), "cells", "output", (None,) * 4)
        wanted = _tensor(dec_path, session.get_inputs(), "cells", "input", (None,) * 4)
        _tensor(dec_path, session.get_inputs(), "coords", "input", (None, None, 2))
        self._check_logits(dec_path, session)
        props = session.get_modelmeta().custom_metadata_map
        ids = (self.metadata.get(EXPORT_ID), props.get(EXPORT_ID))
        own = self.metadata.get("fpliif_classes")
        if any(a is not None and b is not None and a != b for a, b in zip(cells, wanted, strict=True)):
            problem = f"its input 'cells' {_dims(wanted)} does not fit the encoder's output {_dims(cells)}"
        elif props.get("fpliif_classes", own) != own:
            problem = "its metadata lists other classes than the encoder's"
        elif None not in ids and ids[0] != ids[1]:
            problem = f"it belongs to another export ({EXPORT_ID} {ids[1]}, the encoder's {ids[0]})"
        else:
            return
        raise ValueError(
            f"{dec_path}: not the decoder of {self.path.name}: {problem}; keep the two files of one export together"
        )

    @property
    def split(self) -> bool:
        """True for a two-graph export (the encoder runs once per :meth:`encode`)."""
        return self.decoder is not None

    def _check(self, image: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image: expected (B, 3, H, W), got shape {image.shape}")
        if self.static_hw is not None and tuple(image.shape[2:]) != self.static_hw:
            raise ValueError(
                f"image: this ONNX file was exported for {self.static_hw[0]}x{self.static_hw[1]} inputs "
                f"(got {image.shape[2]}x{image.shape[3]}); resize, or export with --dynamic"
            )
        return image

    def encode(self, image: np.ndarray) -> np.ndarray:
        """The latent of ``image`` (B, 3, H, W) for :meth:`query`: the decoder's grid (B, h, w, F) for a
        split export; the checked image itself for a single graph (its encoder runs inside every query)."""
        image = self._check(image)
        if not self.split:
            return image
        if self.static_batch is not None and image.shape[0] != self.static_batch:
            return np.concatenate([self.encode(image[i : i + 1]) for i in range(image.shape[0])])
        return self.session.run(["cells"], {"image": image})[0]

    def latent_size(self, latent: np.ndarray) -> tuple[int, int] | None:
        """(h, w) of the latent grid of one :meth:`encode` output (None if the stride is unknown)."""
        if self.split:
            return int(latent.shape[1]), int(latent.shape[2])
        stride = self.encoder_stride
        return None if stride is None else (latent.shape[2] // stride, latent.shape[3] // stride)

    def query(self, latent: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """Logits (B, Q, C) at ``coords`` (B, Q, 2) or (Q, 2) (shared) of a latent from :meth:`encode`."""
        coords = np.asarray(coords, dtype=np.float32)
        batch = latent.shape[0]
        if coords.ndim == 2:
            coords = np.broadcast_to(coords, (batch, *coords.shape))
        if coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[0] != batch:
            raise ValueError(f"coords: expected (B, Q, 2) with B = {batch}, got {coords.shape}")
        if self.static_batch is not None and batch != self.static_batch:
            return np.concatenate([self.query(latent[i : i + 1], coords[i : i + 1]) for i in range(batch)])
        session, key = (self.decoder, "cells") if self.split else (self.session, "image")
        outs = []
        for s in range(0, max(coords.shape[1], 1), self.chunk_size):
            check_deadline()  # stop between chunks once a deadline set by fpliif.limits.scope has passed
            c = np.ascontiguousarray(coords[:, s : s + self.chunk_size])
            outs.append(session.run(["logits"], {key: latent, "coords": c})[0])
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)

    def decode_at(self, image: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """Logits (B, Q, C) of ``image`` (B, 3, H, W) at ``coords`` (B, Q, 2) or (Q, 2) (shared)."""
        return self.query(self.encode(image), coords)

    def __call__(self, image: np.ndarray, size: int | tuple[int, int] | None = None) -> np.ndarray:
        """Logits (B, C, h, w) at output ``size`` (default: the input size), like ``FPLIIF.forward``."""
        image = self._check(image)
        if size is None:
            size = image.shape[2:]
        h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
        logits = self.decode_at(image, pixel_centers(h, w))
        return logits.reshape(image.shape[0], h, w, -1).transpose(0, 3, 1, 2)

    def probabilities(self, logits: np.ndarray, axis: int = 1) -> np.ndarray:
        """Softmax with the model's temperature."""
        from .geometry import softmax

        return softmax(logits, self.temperature, axis=axis)

    def __repr__(self) -> str:
        graphs = "split" if self.split else "single"
        return (
            f"OnnxModel({str(self.path)!r}, classes={len(self.classes)}, "
            f"input={self.static_hw or 'dynamic'}, graphs={graphs})"
        )


def _session(ort: Any, path: Path, providers: list[str], threads: int | None) -> Any:
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        lines = str(e).replace(f"Load model from {path} failed:", "").strip().splitlines() or [type(e).__name__]
        reason = lines[0] if len(lines[0]) <= 240 else "..." + lines[0][-240:]  # the end says what failed
        raise ValueError(f"{path}: not a loadable ONNX model ({reason})") from None


def _tensor(path: Path, args: Any, name: str, what: str, dims: tuple[int | None, ...]) -> list[int | None]:
    """The shape of graph ``what`` (input/output) ``name`` (None for a dynamic axis), checked: float32, as many
    axes as ``dims``, static axes positive and equal to ``dims`` where it gives one."""
    found = {a.name: a for a in args}
    if name not in found:
        raise ValueError(f"{path}: the graph has no {what} {name!r} (its {what}s: {sorted(found)})")
    arg = found[name]
    shape = [s if isinstance(s, int) else None for s in (arg.shape or [])]
    ok = arg.type == "tensor(float)" and len(shape) == len(dims)
    ok = ok and all(s is None or (s > 0 and d in (None, s)) for s, d in zip(shape, dims, strict=False))
    if not ok:
        raise ValueError(
            f"{path}: graph {what} {name!r} is {arg.type} {_dims(shape)}; expected tensor(float) {_dims(dims)}"
        )
    return shape


def _dims(shape: Any) -> str:
    return "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"


def _encoder_stride(path: Path, spec_json: str | None, input_size: int | None) -> int | None:
    """Stride of the exported FP-LIIF encoder (2 ** (groups - 1)) from the ``fpliif_spec`` metadata (None
    without one); ValueError naming the file for a spec that is not one or whose stride leaves no latent cell."""
    from ..models.checkpoint import MAX_INPUT_SIZE

    if spec_json is None:
        return None
    try:
        spec = json.loads(spec_json)
        depths = (spec.get("args") or {}).get("depths", [2, 6, 16])
        stride = 2 ** (len(depths) - 1) if isinstance(depths, list) and depths else 0
    except (ValueError, TypeError, AttributeError, RecursionError):
        stride = 0
    if not 1 <= stride <= (input_size or MAX_INPUT_SIZE):
        raise ValueError(
            f"{path}: metadata fpliif_spec: expected a model spec with 1 or more encoder groups and a stride of at "
            f"most the input side, got {spec_json!r:.120}"
        )
    return stride
