"""Dynamic int8 quantisation of FP-LIIF's per-query decoder MLP: an inference option (``amp="int8"``).

The decoder MLP's three hidden 256 x 256 layers (~0.2 M MACs per query and ensemble member) are where adaptive
and dense decoding spend their time. Dynamic quantisation stores their weights as int8 (per output channel) and
quantises each input batch on the fly (``torch.ao.quantization.quantize_dynamic``: x86/fbgemm, oneDNN or
qnnpack kernels, CPU only). The first layer stays fp32 (the factored decoder reads its weight columns directly,
:meth:`fpliif.models.FPLIIF.prepare`), and so does the last (hidden -> class logits: quantising it too moved
~0.7 % of the labels, against ~0.2 % without it; docs/performance.md). The encoder and the reduce-channel MLP
(once per latent cell) stay fp32. The trained weights are not changed: the quantised
layers live beside them (``model.quantized_tail``), and setting that to None restores the fp32 decoder.
Accuracy against fp32 and how the option was decided: docs/performance.md.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def check_int8(model: Any, device: torch.device | str = "cpu") -> None:
    """ValueError unless ``model`` has a per-query MLP to quantise and ``device`` is a CPU with int8 kernels."""
    if not isinstance(getattr(model, "mlp", None), nn.Sequential) or not hasattr(model, "quantized_tail"):
        raise ValueError(f"amp int8: quantises FP-LIIF's decoder MLP; {type(model).__name__} has none")
    from .precision import resolve_amp

    resolve_amp("int8", device, inference=True)  # the CPU-only rule
    if torch.backends.quantized.engine == "none":
        raise ValueError("amp int8: this torch build has no quantized CPU engine (fbgemm/x86/qnnpack)")


def int8_tail(model: Any) -> tuple[nn.Module, ...]:
    """The decoder MLP's layers after the first one, its hidden linear layers dynamically quantised (int8
    weights per output channel); the final layer (hidden -> class logits) stays fp32."""
    tail = nn.Sequential(*list(model.mlp)[1:]).cpu().eval()
    linear = [name for name, layer in tail.named_children() if isinstance(layer, nn.Linear)]
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings():  # torch marks eager-mode quantisation deprecated in favour of torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*", category=UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(tail, dict.fromkeys(linear[:-1], qconfig), torch.qint8)
    return tuple(quantized)


def set_int8_decoder(model: Any, enabled: bool = True) -> None:
    """Decode with the int8 MLP tail (:func:`int8_tail`, built from the current fp32 weights) or, with
    ``enabled=False``, the fp32 one again."""
    if enabled:
        check_int8(model, next(model.parameters()).device)
    model.quantized_tail = int8_tail(model) if enabled else None


@contextlib.contextmanager
def swapped_tail(model: Any, tail: tuple[nn.Module, ...] | None) -> Iterator[None]:
    """``model.quantized_tail = tail`` inside the block (None: the fp32 MLP); the previous one afterwards."""
    before = model.quantized_tail
    model.quantized_tail = tail
    try:
        yield
    finally:
        model.quantized_tail = before


def int8_decoder(model: Any, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Decode with the int8 MLP tail inside the block (a no-op with ``enabled=False``)."""
    if not enabled:
        return contextlib.nullcontext()
    check_int8(model, next(model.parameters()).device)
    return swapped_tail(model, int8_tail(model))
