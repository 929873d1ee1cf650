"""Multiply-accumulate counts (the paper's "GFlops" are MACs) via torch.utils.flop_counter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..models.checkpoint import DEFAULT_INPUT_SIZE


@contextmanager
def paper_decoder(model: torch.nn.Module) -> Iterator[None]:
    """Run FP-LIIF's first decoder layer on the concatenated query input, as the paper counts it.

    The model's default factored decoder (:meth:`fpliif.models.FPLIIF.prepare`) computes the same function
    with fewer MACs; models without the switch are left alone.
    """
    had = hasattr(model, "factored_decoder")
    old = getattr(model, "factored_decoder", None)
    if had:
        model.factored_decoder = False
    try:
        yield
    finally:
        if had:
            model.factored_decoder = old


def count_macs(
    model: torch.nn.Module,
    input_size: tuple[int, int] = (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE),
    output_size: int | tuple[int, int] = DEFAULT_INPUT_SIZE,
    executed: bool = False,
) -> int:
    """MACs of one forward pass for a single image (conv and matmul; flop_counter's FLOPs / 2).

    By default the architecture's MACs as the paper counts them (decoder input concatenated per query);
    ``executed=True`` counts what the model actually runs (the factored decoder: fewer MACs, same output).
    """
    image = torch.rand(1, 3, *input_size)
    if executed:
        return count_macs_of(lambda: model(image, size=output_size))
    with paper_decoder(model):
        return count_macs_of(lambda: model(image, size=output_size))


def count_macs_of(fn: Callable[[], Any]) -> int:
    """MACs (conv and matmul) that ``fn()`` executes, without autograd."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2
