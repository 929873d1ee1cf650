"""A fake implicit model shared by the parser tests: it reads the class off the crop's grey level."""

from __future__ import annotations

import torch
from torch import nn

from fpliif.labels import CELEBAMASK_HQ

CODE = 12  # oracle colour code: class k <-> grey level k * CODE


class Oracle(nn.Module):
    """A 'model' that reads the class off the crop's grey level (k * CODE) at each query point (nearest texel)."""

    label_set = CELEBAMASK_HQ
    temperature = 1.0

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def decode(self, z: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        v = nn.functional.grid_sample(z[:, :1], coords[:, None], mode="nearest", align_corners=False)[:, 0, 0]
        k = (v * 255 / CODE).round().long().clamp(0, 18)
        return nn.functional.one_hot(k, 19).float() * 10
