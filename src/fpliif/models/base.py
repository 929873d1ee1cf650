"""Base class shared by every segmentation model in fpliif, and input checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..labels import HasLabelSet, LabelSet
from ..validate import check_size  # noqa: F401 - the one output-size check

MAX_CLASSES = 1024
"""Most classes a model spec read from a file may ask for."""


def check_classes_spec(args: Mapping[str, Any], where: str = "args") -> None:
    """``classes`` of an untrusted spec (if given): a label-set name or a list of 2 to :data:`MAX_CLASSES` class
    names, each at most 100 characters; ValueError naming ``{where}.classes``."""
    if "classes" not in args:
        return
    c = args["classes"]
    name_ok = isinstance(c, str) and 0 < len(c) <= 100
    list_ok = isinstance(c, (list, tuple)) and 2 <= len(c) <= MAX_CLASSES
    if not (name_ok or (list_ok and all(isinstance(n, str) and 0 < len(n) <= 100 for n in c))):
        raise ValueError(
            f"{where}.classes: expected a label-set name or a list of 2 to {MAX_CLASSES} class names, got {c!r:.200}"
        )
    if list_ok and len(set(c)) != len(c):
        raise ValueError(f"{where}.classes: class names must be distinct, got {c!r:.200}")


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


class SegmentationModel(nn.Module, HasLabelSet):
    """Common interface: ``model(image, size=(H, W))`` -> logits (B, C, H, W).

    Images are float RGB in [0, 1], shape (B, 3, H, W). Subclasses implement ``forward`` and are
    registered in :mod:`fpliif.models.registry`; ``spec`` records how to rebuild them. Weight files are written
    and read by :func:`fpliif.models.checkpoint.save` / :func:`~fpliif.models.checkpoint.load` (the model
    imports neither).
    """

    spec: dict[str, Any]
    label_set: LabelSet
    temperature: float = 1.0
    find_unused_parameters: bool = False
    """True for a model whose training forward may leave a parameter it trains without a gradient: DDP then
    searches the graph every step (:func:`fpliif.train.distributed.ddp_options`). Parameters it does not train
    belong in no group of its ``param_groups(lr)`` hook instead (the trainer freezes them)."""

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
