"""Run a PyTorch model (any registered one) for :class:`fpliif.FaceParser` (numpy in, numpy out)."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from ..adaptive import is_implicit
from ..models.checkpoint import input_size_of
from ..precision import DEFAULT_INFERENCE_AMP
from .geometry import bilinear_points

ONE_DECODER_THREAD_UP_TO = 2
"""``decode_threads="auto"``: decoding on a CPU runs on one thread when torch uses at most this many (measured on 2
cores in bf16, fp32 and int8, docs/performance.md "Session 11"); otherwise the decoder keeps torch's threads.
Only :class:`~fpliif.FaceParser`'s adaptive photo path decodes in :meth:`TorchBackend.decoding`: its many small
decoder calls run between single-threaded numpy stages, where the second thread costs more than it gives."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device (None: the CPU); ValueError for one that is unknown or not available."""
    try:
        dev = torch.device(device or "cpu")
    except (RuntimeError, TypeError):  # e.g. "gpu": torch lists some twenty device types
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available (torch.cuda.is_available() is False)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    return dev


class TorchBackend:
    """``encode(batch (B, 3, S, S) float32) -> latents``; ``decode(latent, coords (Q, 2)) -> (Q, C)``.

    Any registered model: one with an implicit decoder (``encode``/``decode``, FP-LIIF; ``implicit`` True) is
    queried at the coordinates; for a dense model (SegFace, STN-iCNN) the "latent" is its logits at the input
    size, ``model(batch)``, as an (S, S, C) array, and ``decode`` samples them bilinearly at the coordinates
    (:func:`sample_logits`), as the parser resamples any grid.

    ``amp``: autocast precision of encoding and decoding: ``auto`` (default: bf16 where the device computes it
    natively, see :func:`fpliif.precision.resolve_amp`), ``none`` (fp32) or ``bf16``; ``int8``: fp32 with FP-LIIF's
    decoder MLP dynamically quantised (:mod:`fpliif.quantize`, CPU only; the model's weights are kept).
    ``compile``: run FP-LIIF's encoder and decoder under ``torch.compile`` (:func:`fpliif.compiled.compile_model`).
    ``decode_threads``: torch threads inside :meth:`decoding` (the parser's decoding stage); ``"auto"``: one on a CPU
    where torch uses at most :data:`ONE_DECODER_THREAD_UP_TO` threads, else torch's own.
    """

    name = "torch"

    def __init__(
        self,
        model: Any,
        device: str | torch.device | None = "cpu",
        threads: int | None = None,
        amp: str = DEFAULT_INFERENCE_AMP,
        compile: bool = False,
        decode_threads: int | str = "auto",
    ):
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "label_set"):
            raise ValueError(
                f"model: expected an fpliif model (a registered SegmentationModel with .label_set), "
                f"got {type(model).__name__}"
            )
        self.implicit = is_implicit(model)
        if decode_threads != "auto" and not (
            isinstance(decode_threads, int) and not isinstance(decode_threads, bool) and decode_threads >= 1
        ):
            raise ValueError(f"decode_threads: expected 'auto' or an integer >= 1, got {decode_threads!r}")
        self.decode_threads = decode_threads
        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        from ..precision import AMP_DTYPES, resolve_amp

        self.amp = resolve_amp(amp, self.device, inference=True)
        self.autocast_dtype = AMP_DTYPES[self.amp]
        self.model = model.to(self.device).eval()
        if self.amp == "int8":
            from ..quantize import set_int8_decoder

            set_int8_decoder(self.model)
        if compile:
            from ..compiled import compile_model

            compile_model(self.model, self.device)
        self.label_set = model.label_set
        self.temperature = float(getattr(model, "temperature", 1.0))
        params = [p for p in model.parameters() if p.is_floating_point()]
        self.dtype = params[0].dtype if params else torch.float32
        self.input_size = input_size_of(model, default=None)
        prepare, prepared = getattr(model, "prepare", None), getattr(model, "decode_prepared", None)
        self.prepared = self.implicit and callable(prepare) and callable(prepared)

    def encode(self, batch: np.ndarray) -> list[Any]:
        """One latent per image: the model's prepared grid (``prepare``: computed once, queried many times)
        where it has one, else its feature grid; a dense model's (S, S, C) float32 logits."""
        with torch.inference_mode(), self._autocast():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, self.dtype)
            if not self.implicit:
                logits = self.model(x).float().permute(0, 2, 3, 1).cpu().numpy()
                return [np.ascontiguousarray(grid) for grid in logits]
            z = self.model.encode(x)
            if self.prepared:
                return self.model.prepare(z).split()
        return list(z.split(1))

    def decoding(self) -> contextlib.AbstractContextManager[None]:
        """Run the enclosed decoding on :meth:`decoder_threads` torch threads (in this thread; restored after)."""
        n = self.decoder_threads()
        return contextlib.nullcontext() if n == torch.get_num_threads() else _torch_threads(n)

    def decoder_threads(self) -> int:
        """Torch threads for decoding now: ``decode_threads``, or its ``"auto"`` rule (class docstring)."""
        current = torch.get_num_threads()
        if self.decode_threads != "auto":
            return int(self.decode_threads)
        return 1 if self.device.type == "cpu" and current <= ONE_DECODER_THREAD_UP_TO else current

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def latent_size(self, latent: Any) -> tuple[int, int] | None:
        """(h, w) of the latent grid of one :meth:`encode` output (None if it is not a grid, or a dense model's)."""
        if not self.implicit:
            return None
        cells = getattr(latent, "cells", latent)
        if isinstance(cells, torch.Tensor) and cells.dim() == 4:
            return tuple(cells.shape[1:3]) if hasattr(latent, "cells") else tuple(cells.shape[2:4])
        return None

    def decode(self, latent: Any, coords: np.ndarray) -> np.ndarray:
        """(Q, C) logits at crop coordinates (Q, 2) of one latent from :meth:`encode`."""
        if not self.implicit:
            return sample_logits(latent, coords)
        with torch.inference_mode(), self._autocast():
            c = torch.from_numpy(np.ascontiguousarray(coords, np.float32)).to(self.device)[None]
            if self.prepared:
                out = self.model.decode_prepared(latent, c)
            else:
                out = self.model.decode(latent, c)
        return out[0].float().cpu().numpy()


@contextlib.contextmanager
def _torch_threads(n: int) -> Any:
    """torch's intra-op threads set to ``n`` in the enclosed block (per thread under OpenMP), then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sample_logits(grid: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """(Q, C) bilinear samples of an (h, w, C) logit grid at coordinates (Q, 2) (x, y) in [-1, 1] (pixel-centre
    convention, ``align_corners=False``; clamped at the border, as ``F.interpolate`` of the logits)."""
    h, w = grid.shape[:2]
    c = np.asarray(coords, np.float64)
    return bilinear_points(grid, (c[:, 1] + 1) * (h / 2) - 0.5, (c[:, 0] + 1) * (w / 2) - 0.5)


def tensor_to_numpy_images(x: Any) -> tuple[list[np.ndarray], bool]:
    """Tensor (3, H, W) or (B, 3, H, W), float in [0, 1] or uint8 -> list of (H, W, 3) arrays, is_batch."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4) or x.shape[-3] not in (1, 3):
        raise ValueError(f"image tensor: expected shape (3, H, W) or (B, 3, H, W), got {tuple(x.shape)}")
    batch = x.dim() == 4
    x = x.detach().to("cpu")
    if x.dim() == 3:
        x = x[None]
    if x.dtype == torch.uint8:
        arr = x.permute(0, 2, 3, 1).numpy()
    elif x.is_floating_point():
        arr = x.float().permute(0, 2, 3, 1).numpy()
    else:
        raise ValueError(f"image tensor: expected float in [0, 1] or uint8, got dtype {x.dtype}")
    return [np.ascontiguousarray(a) for a in arr], batch
