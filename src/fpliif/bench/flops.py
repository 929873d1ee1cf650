"""Multiply-accumulate counts (the paper's "GFlops" are MACs) via torch.utils.flop_counter."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from ..models.checkpoint import DEFAULT_INPUT_SIZE


def _count_fused_linear() -> None:
    """Teach the flop counter the fused oneDNN linear (+ReLU) that FP-LIIF's bf16 decoder runs on a CPU
    (:func:`fpliif.models.fpliif.fused_linear`): without a formula its matmuls, nearly all of the decoder's MACs,
    were not counted (a dense bf16 decode reported 6.1 G MACs against fp32's 58.8 G)."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):  # a build without oneDNN: the decoder never calls it
        return

    def linear_flop(x_shape, w_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return 2 * math.prod(x_shape[:-1]) * w_shape[0] * w_shape[1]

    try:
        register_flop_formula(op)(linear_flop)
    except RuntimeError:  # already registered (e.g. by a later torch)
        pass


_count_fused_linear()


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
