"""Multiply-accumulate counts (the paper's "GFlops" are MACs) via torch.utils.flop_counter."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_macs(
    model: torch.nn.Module, input_size: tuple[int, int] = (256, 256), output_size: int | tuple[int, int] = 256
) -> int:
    """MACs of one forward pass for a single image (conv and matmul; flop_counter's FLOPs / 2)."""
    image = torch.rand(1, 3, *input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image, size=output_size)
    return counter.get_total_flops() // 2
