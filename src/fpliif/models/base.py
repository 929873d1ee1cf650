"""Base class shared by every segmentation model in fpliif, and input checks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..labels import LabelSet, generic_label_set, get_label_set


def resolve_classes(classes: str | Sequence[str]) -> LabelSet:
    """A label-set name (``"celebamask-hq"``) or an explicit list of class names -> LabelSet."""
    if isinstance(classes, str):
        return get_label_set(classes)
    classes = list(classes)
    if len(classes) < 2:
        raise ValueError(f"classes: need at least 2 classes, got {classes!r}")
    for s_name in ("celebamask-hq", "lapa", "helen"):
        s = get_label_set(s_name)
        if list(s.classes) == classes:
            return s
    return generic_label_set(classes)


def check_image(image: Any, name: str = "image") -> torch.Tensor:
    """Validate a (B, 3, H, W) floating-point image batch; raise ValueError naming ``name``."""
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D tensor (B, 3, H, W), got shape {tuple(image.shape)}")
    if image.shape[1] != 3:
        raise ValueError(
            f"{name}: expected 3 channels (RGB) in dim 1, got {image.shape[1]} (shape {tuple(image.shape)})"
        )
    if not image.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor with values in [0, 1], got dtype {image.dtype}")
    if image.shape[0] == 0:
        raise ValueError(f"{name}: empty batch")
    if not torch.isfinite(image).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return image


def check_size(size: Any, name: str = "size") -> tuple[int, int]:
    """Validate an output size given as int or (H, W) of positive ints."""
    if isinstance(size, bool):
        raise ValueError(f"{name}: expected an int or (H, W), got {size!r}")
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = (int(v) for v in size)
        if any(int(v) != v for v in size):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an int or a pair of ints (H, W), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name}: output size must be positive, got {(h, w)}")
    return h, w


def check_coords(coords: Any, batch: int, name: str = "coords") -> torch.Tensor:
    """Validate query coordinates (B, Q, 2) in [-1, 1] (x, y order, as torch's grid_sample)."""
    if not isinstance(coords, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(coords).__name__}")
    if coords.dim() != 3 or coords.shape[-1] != 2:
        raise ValueError(f"{name}: expected shape (B, Q, 2), got {tuple(coords.shape)}")
    if coords.shape[0] != batch:
        raise ValueError(f"{name}: batch size {coords.shape[0]} does not match the latent batch size {batch}")
    if not coords.is_floating_point():
        raise ValueError(f"{name}: expected floating-point coordinates, got dtype {coords.dtype}")
    if not torch.isfinite(coords).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    if coords.numel() and (coords.min() < -1 or coords.max() > 1):
        raise ValueError(
            f"{name}: coordinates must lie in [-1, 1], got range [{coords.min().item():.4g}, {coords.max().item():.4g}]"
        )
    return coords


def pixel_centers(
    h: int, w: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(H*W, 2) coordinates (x, y) of pixel centres of an H x W grid over [-1, 1], row-major."""
    ys = (torch.arange(h, device=device, dtype=torch.float64) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=torch.float64) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2).to(dtype)


class SegmentationModel(nn.Module):
    """Common interface: ``model(image, size=(H, W))`` -> logits (B, C, H, W).

    Images are float RGB in [0, 1], shape (B, 3, H, W). Subclasses implement ``forward`` and are
    registered in :mod:`fpliif.registry`; ``spec`` records how to rebuild them.
    """

    spec: dict[str, Any]
    label_set: LabelSet
    temperature: float = 1.0

    @property
    def classes(self) -> tuple[str, ...]:
        return self.label_set.classes

    @property
    def num_classes(self) -> int:
        return self.label_set.num_classes

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def probabilities(self, logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Softmax with the model's temperature (tau = 0.5 for FP-LIIF)."""
        return torch.softmax(logits.float() / self.temperature, dim=dim)

    @torch.inference_mode()
    def predict(self, image: torch.Tensor, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """Logits at ``size`` in eval mode without autograd (the model's mode is restored)."""
        was_training = self.training
        self.eval()
        try:
            return self(image, size=size)
        finally:
            self.train(was_training)

    def save_pretrained(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        from ..checkpoint import save

        return save(self, path, metadata=metadata)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> SegmentationModel:
        from ..checkpoint import load

        return load(path, device=device)
