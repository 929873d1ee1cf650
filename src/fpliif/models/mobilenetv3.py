"""MobileNetV3-Large (Howard et al., "Searching for MobileNetV3", ICCV 2019) as a multi-scale feature extractor.

Written here (torchvision and timm are not installable in this project), from the paper's Table 1: a 3x3
stride-2 stem of 16 channels with hard-swish, 15 inverted-residual "bneck" blocks (1x1 expansion, k x k
depthwise, optional squeeze-and-excite, linear 1x1 projection, identity shortcut when the shape allows) and
a final 1x1 conv to 960 channels with hard-swish. The pooling and the two classifier convs after it (1280
channels, then the classes) are not built: a segmentation model reads only the feature maps.

Choices the paper leaves to its code, taken from the reference implementations (TF-slim's, which
torchvision follows layer for layer): every conv is bias-free and followed by batch norm (eps 1e-3); the
squeeze-and-excite block reduces the *expanded* channels to ``make_divisible(exp / 4, 8)`` with a ReLU and
gates with a hard sigmoid, its two 1x1 convs keep their biases; ``width_mult`` scales every channel count
to a multiple of 8 (the stem too; the last conv is 6x the last block's output, 960 at width 1.0). With
width 1.0 the extractor has 2,971,952 parameters; with the classifier head (960 -> 1280 -> 1000, 2,511,080
parameters) that is 5,483,032, torchvision's published ``num_params`` for its MobileNetV3-Large, 1.5 % above
the paper's rounded "5.4 M" (Table 3); ``tests/test_segface.py`` checks both.

**No pretrained weights exist in this project**: the backbone is initialised from scratch (Kaiming-normal
convs, unit batch norms) and trained with the model that uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

BN_EPS = 1e-3
"""Batch-norm epsilon of the reference implementations (TF-slim's MobileNetV3, torchvision)."""


class Bneck(NamedTuple):
    """One row of Table 1: kernel, expansion size, output channels, SE, activation ("RE"/"HS"), stride."""

    kernel: int
    exp: int
    out: int
    se: bool
    act: str
    stride: int


LARGE: tuple[Bneck, ...] = (
    Bneck(3, 16, 16, False, "RE", 1),
    Bneck(3, 64, 24, False, "RE", 2),
    Bneck(3, 72, 24, False, "RE", 1),  # -> stride 4
    Bneck(5, 72, 40, True, "RE", 2),
    Bneck(5, 120, 40, True, "RE", 1),
    Bneck(5, 120, 40, True, "RE", 1),  # -> stride 8
    Bneck(3, 240, 80, False, "HS", 2),
    Bneck(3, 200, 80, False, "HS", 1),
    Bneck(3, 184, 80, False, "HS", 1),
    Bneck(3, 184, 80, False, "HS", 1),
    Bneck(3, 480, 112, True, "HS", 1),
    Bneck(3, 672, 112, True, "HS", 1),  # -> stride 16
    Bneck(5, 672, 160, True, "HS", 2),
    Bneck(5, 960, 160, True, "HS", 1),
    Bneck(5, 960, 160, True, "HS", 1),  # then the 1x1 conv to 960 channels -> stride 32
)
"""MobileNetV3-Large, Table 1 of the paper (the stem and the last 1x1 conv are built separately)."""

TAPS: tuple[int, ...] = (2, 5, 11)
"""Blocks (0-based rows of :data:`LARGE`) whose outputs are the stride-4, 8 and 16 features; the stride-32
feature is the last 1x1 conv (960 channels), as SegFace's reference code reads the backbone."""


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of ``divisor`` >= ``divisor``, never below 90 % of ``value`` (MobileNet's rule)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def activation(name: str) -> nn.Module:
    if name == "RE":
        return nn.ReLU(inplace=True)
    if name == "HS":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"activation: expected 'RE' or 'HS', got {name!r}")


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int, act: str | None, groups: int = 1) -> nn.Sequential:
    """Bias-free conv, batch norm, then the activation (None: linear, as the bneck projection)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=BN_EPS),
    ]
    if act is not None:
        layers.append(activation(act))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Global average pool -> 1x1 conv (ReLU) -> 1x1 conv -> hard sigmoid, scaling the channels."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = self.fc2(torch.relu(self.fc1(s)))
        return x * nn.functional.hardsigmoid(s)


class InvertedResidual(nn.Module):
    """A bneck block: 1x1 expansion (skipped when exp == input), depthwise k x k, SE, linear 1x1 projection."""

    def __init__(self, c_in: int, exp: int, c_out: int, kernel: int, se: bool, act: str, stride: int):
        super().__init__()
        layers: list[nn.Module] = []
        if exp != c_in:
            layers.append(conv_bn(c_in, exp, 1, 1, act))
        layers.append(conv_bn(exp, exp, kernel, stride, act, groups=exp))
        if se:
            layers.append(SqueezeExcite(exp, make_divisible(exp / 4)))
        layers.append(conv_bn(exp, c_out, 1, 1, None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV3Large(nn.Module):
    """MobileNetV3-Large features at strides 4, 8, 16 and 32 (``forward`` returns the four maps).

    Args:
        width_mult: scales every channel count (1.0 = the paper's model; small values make tiny test models).
    Attributes:
        channels: the channels of the four returned maps ((24, 40, 112, 960) at width 1.0).
    """

    def __init__(self, width_mult: float = 1.0):
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult: must be positive, got {width_mult}")
        stem = make_divisible(16 * width_mult)
        self.stem = conv_bn(3, stem, 3, 2, "HS")
        blocks: list[nn.Module] = []
        c_in = stem
        for row in LARGE:
            c_out = make_divisible(row.out * width_mult)
            exp = make_divisible(row.exp * width_mult)
            blocks.append(InvertedResidual(c_in, exp, c_out, row.kernel, row.se, row.act, row.stride))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        last = 6 * c_in
        self.last = conv_bn(c_in, last, 1, 1, "HS")
        taps: Sequence[int] = TAPS
        self.channels = (*(make_divisible(LARGE[i].out * width_mult) for i in taps), last)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W), normalised -> [stride 4, stride 8, stride 16, stride 32] feature maps (sizes rounded
        up at every stride-2 layer)."""
        feats = []
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in TAPS:
                feats.append(x)
        feats.append(self.last(x))
        return feats
