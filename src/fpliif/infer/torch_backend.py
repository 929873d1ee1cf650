"""Run a PyTorch fpliif model for :class:`fpliif.FaceParser` (numpy in, numpy out)."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from ..checkpoint import input_size_of


def resolve_device(device: str | torch.device | None) -> torch.device:
    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' requested but CUDA is not available (torch.cuda.is_available() is False)"
        )
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    return dev


class TorchBackend:
    """``encode(batch (B, 3, S, S) float32) -> latents``; ``decode(latent, coords (Q, 2)) -> (Q, C)``.

    ``amp``: autocast precision of encoding and decoding: ``none`` (fp32), ``bf16``, or ``auto`` (bf16 where the
    device computes it natively, see :func:`fpliif.precision.resolve_amp`).
    """

    name = "torch"

    def __init__(
        self, model: Any, device: str | torch.device | None = "cpu", threads: int | None = None, amp: str = "none"
    ):
        for attr in ("encode", "decode", "label_set"):
            if not hasattr(model, attr):
                raise ValueError(
                    f"model: expected an fpliif model with .encode/.decode/.label_set, "
                    f"got {type(model).__name__}"
                )
        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        from ..precision import AMP_DTYPES, resolve_amp

        self.amp = resolve_amp(amp, self.device)
        self.autocast_dtype = AMP_DTYPES[self.amp]
        self.model = model.to(self.device).eval()
        self.label_set = model.label_set
        self.temperature = float(getattr(model, "temperature", 1.0))
        params = [p for p in model.parameters() if p.is_floating_point()]
        self.dtype = params[0].dtype if params else torch.float32
        self.input_size = input_size_of(model, default=None)
        self.prepared = callable(getattr(model, "prepare", None)) and callable(getattr(model, "decode_prepared", None))

    def encode(self, batch: np.ndarray) -> list[Any]:
        """One latent per image: the model's prepared grid (``prepare``: computed once, queried many times)
        where it has one, else its feature grid."""
        with torch.inference_mode(), self._autocast():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, self.dtype)
            z = self.model.encode(x)
            if self.prepared:
                return self.model.prepare(z).split()
        return list(z.split(1))

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def latent_size(self, latent: Any) -> tuple[int, int] | None:
        """(h, w) of the latent grid of one :meth:`encode` output (None if it is not a grid)."""
        cells = getattr(latent, "cells", latent)
        if isinstance(cells, torch.Tensor) and cells.dim() == 4:
            return tuple(cells.shape[1:3]) if hasattr(latent, "cells") else tuple(cells.shape[2:4])
        return None

    def decode(self, latent: Any, coords: np.ndarray) -> np.ndarray:
        """(Q, C) logits at crop coordinates (Q, 2) of one latent from :meth:`encode`."""
        with torch.inference_mode(), self._autocast():
            c = torch.from_numpy(np.ascontiguousarray(coords, np.float32)).to(self.device)[None]
            if self.prepared:
                out = self.model.decode_prepared(latent, c)
            else:
                out = self.model.decode(latent, c)
        return out[0].float().cpu().numpy()


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
