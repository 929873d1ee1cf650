"""Run an exported fpliif ONNX file with onnxruntime: numpy in, numpy out, no torch.

The graph (written by ``fpliif export onnx``) takes ``image`` (B, 3, H, W) float32 in [0, 1] and
``coords`` (B, Q, 2) float32 query coordinates (x, y) in [-1, 1] at pixel centres, and returns
``logits`` (B, Q, C): encoder and implicit decoder in one file, any output size from one file.
Class names, temperature and input size are stored in the file's metadata.
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
    ``model.decode_at(image, coords (B, Q, 2)) -> logits (B, Q, C)`` for arbitrary query points.
    Queries are run in chunks of ``chunk_size`` (each chunk re-runs the encoder: the file holds one graph).
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
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ValueError(f"{path}: cannot load ONNX model ({e})") from None
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
        if set(inputs) != {"image", "coords"}:
            raise ValueError(f"{path}: expected graph inputs 'image' and 'coords', got {sorted(inputs)}")
        shape = inputs["image"].shape
        self.static_batch = shape[0] if isinstance(shape[0], int) else None
        self.static_hw = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None

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

    def decode_at(self, image: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """Logits (B, Q, C) of ``image`` (B, 3, H, W) at ``coords`` (B, Q, 2) or (Q, 2) (shared)."""
        image = self._check(image)
        coords = np.asarray(coords, dtype=np.float32)
        if coords.ndim == 2:
            coords = np.broadcast_to(coords, (image.shape[0], *coords.shape))
        if coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[0] != image.shape[0]:
            raise ValueError(f"coords: expected (B, Q, 2) with B = {image.shape[0]}, got {coords.shape}")
        if self.static_batch is not None and image.shape[0] != self.static_batch:
            return np.concatenate(
                [self.decode_at(image[i : i + 1], coords[i : i + 1]) for i in range(image.shape[0])]
            )
        q = coords.shape[1]
        outs = []
        for s in range(0, max(q, 1), self.chunk_size):
            c = np.ascontiguousarray(coords[:, s : s + self.chunk_size])
            outs.append(self.session.run(["logits"], {"image": image, "coords": c})[0])
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)

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
        return (
            f"OnnxModel({str(self.path)!r}, classes={len(self.classes)}, input={self.static_hw or 'dynamic'})"
        )


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
    }
