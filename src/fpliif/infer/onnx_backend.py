"""Run an exported fpliif ONNX model with onnxruntime: numpy in, numpy out, no torch.

``fpliif export onnx`` writes two graphs (see :mod:`fpliif.infer.onnx_export`): the encoder ``NAME.onnx``
(``image`` (B, 3, H, W) float32 in [0, 1] -> ``cells``, the latent grid) and the decoder ``NAME.decoder.onnx``
(``cells`` + ``coords`` (B, Q, 2) float32 (x, y) in [-1, 1] at pixel centres -> ``logits`` (B, Q, C)), so the
encoder runs once per image however many query chunks follow. Single-graph files (``image`` + ``coords`` ->
``logits``, ``--single-graph``) load too. Class names, temperature and input size are in the files' metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .geometry import pixel_centers


class OnnxModel:
    """An fpliif ONNX export on onnxruntime.

    ``model(image (B, 3, H, W) float32, size) -> logits (B, C, h, w)`` like the PyTorch model;
    ``model.decode_at(image, coords (B, Q, 2)) -> logits (B, Q, C)`` for arbitrary query points, or
    ``latent = model.encode(image)`` once, then ``model.query(latent, coords)`` as often as needed.
    ``path`` is the encoder file of a split export (its decoder file beside it) or a single-graph file.
    Queries run in chunks of ``chunk_size`` (a single graph re-runs its encoder for every chunk).
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        threads: int | None = None,
        chunk_size: int = 65536,
        providers: list[str] | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError(
                "the onnxruntime backend needs onnxruntime: pip install 'fpliif[onnx]'"
            ) from None
        from ..labels import LABEL_SETS, generic_label_set

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
        meta = self.session.get_modelmeta().custom_metadata_map
        if "fpliif_classes" not in meta:
            raise ValueError(
                f"{path}: not an fpliif ONNX export (no fpliif_classes metadata); "
                "write one with `fpliif export onnx`"
            )
        self.path = path
        self.metadata = dict(meta)
        classes = tuple(json.loads(meta["fpliif_classes"]))
        ls = LABEL_SETS.get(meta.get("fpliif_label_set", ""))
        self.label_set = ls if ls is not None and ls.classes == classes else generic_label_set(classes)
        self.temperature = float(meta.get("fpliif_temperature", "1.0"))
        self.input_size = int(meta["fpliif_input_size"]) if meta.get("fpliif_input_size") else None
        self.chunk_size = int(chunk_size)
        self.encoder_stride = _encoder_stride(meta.get("fpliif_spec"))
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.decoder: Any = None
        if set(inputs) == {"cells", "coords"}:
            encoder = meta.get("fpliif_encoder", "the matching NAME.onnx")
            raise ValueError(f"{path}: this is the decoder half of a split export; load its encoder ({encoder})")
        if set(inputs) == {"image"}:
            self.decoder = self._load_decoder(ort, providers, threads)
        elif set(inputs) != {"image", "coords"}:
            raise ValueError(f"{path}: expected graph inputs 'image' (+ 'coords'), got {sorted(inputs)}")
        shape = inputs["image"].shape
        self.static_batch = shape[0] if isinstance(shape[0], int) else None
        self.static_hw = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None

    def _load_decoder(self, ort: Any, providers: list[str], threads: int | None) -> Any:
        name = self.metadata.get("fpliif_decoder")
        if not name or Path(name).name != name:
            raise ValueError(f"{self.path}: an encoder graph without a valid fpliif_decoder file name ({name!r})")
        dec_path = self.path.parent / name
        if not dec_path.is_file():
            raise FileNotFoundError(
                f"{self.path}: its decoder graph {dec_path} is missing (a split export is two files: "
                f"{self.path.name} and {name}; keep them together)"
            )
        session = _session(ort, dec_path, providers, threads)
        names = {i.name for i in session.get_inputs()}
        if names != {"cells", "coords"}:
            raise ValueError(f"{dec_path}: expected decoder inputs 'cells' and 'coords', got {sorted(names)}")
        return session

    @property
    def split(self) -> bool:
        """True for a two-graph export (the encoder runs once per :meth:`encode`)."""
        return self.decoder is not None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.label_set.classes

    @property
    def num_classes(self) -> int:
        return self.label_set.num_classes

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
        raise ValueError(f"{path}: cannot load ONNX model ({e})") from None


def _encoder_stride(spec_json: str | None) -> int | None:
    """Stride of the exported FP-LIIF encoder (2 ** (groups - 1)) from the ``fpliif_spec`` metadata."""
    try:
        depths = json.loads(spec_json or "")["args"].get("depths", [2, 6, 16])
        return 2 ** (len(depths) - 1)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def onnx_available() -> tuple[bool, str]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return False, str(e)
    return True, ""


def describe(model: Any) -> dict[str, Any]:
    return {
        "path": str(model.path),
        "classes": list(model.classes),
        "temperature": model.temperature,
        "input_size": model.input_size,
        "static_hw": model.static_hw,
        "static_batch": model.static_batch,
        "graphs": "split" if model.split else "single",
    }
