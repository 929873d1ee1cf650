"""Export an fpliif model (encoder + implicit decoder) to one ONNX file.

Graph: ``image`` (B, 3, H, W) float32 in [0, 1], ``coords`` (B, Q, 2) float32 (x, y) in [-1, 1]
-> ``logits`` (B, Q, C). The number of queries Q is always dynamic, so one file serves every output size
(build pixel-centre coordinates with :func:`fpliif.infer.geometry.pixel_centers`); ``dynamic=True`` also
makes the batch and the input height/width dynamic.

The graph is the model's own code (:meth:`FPLIIF.prepare` then :meth:`FPLIIF.query`, with the factored first
decoder layer), written so that tracing keeps the batch, the input size and the number of queries dynamic.
Uses the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``), which needs only the ``onnx`` package.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

OPSET = 17


class ExportGraph(nn.Module):
    """(image, coords) -> logits of an FP-LIIF model: its encoder, :meth:`prepare` and :meth:`query`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        m = self.m
        z = m.encoder((image - m.mean) / m.std)
        return m.query(m.prepare(z), coords)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: int = 256,
    dynamic: bool = False,
    opset: int = OPSET,
    check: bool = True,
) -> Path:
    """Write ``model`` as ONNX to ``path`` (fp32, CPU) with fpliif metadata; returns the path."""
    import onnx

    for attr in ("encoder", "prepare", "query", "mlp"):
        if not hasattr(model, attr):
            raise ValueError(
                f"export: only FP-LIIF models can be exported (missing {attr!r} on {type(model).__name__})"
            )
    if input_size < 2 * model.encoder.stride:
        raise ValueError(f"size: input size {input_size} is too small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu", torch.float32).eval()
    factored = getattr(model, "factored_decoder", True)
    model.factored_decoder = True
    graph = ExportGraph(model).eval()
    batch = 2 if dynamic else 1
    image = torch.rand(batch, 3, input_size, input_size)
    coords = torch.rand(batch, 97, 2) * 2 - 1
    axes: dict[str, dict[int, str]] = {"coords": {1: "queries"}, "logits": {1: "queries"}}
    if dynamic:
        axes = {
            "image": {0: "batch", 2: "height", 3: "width"},
            "coords": {0: "batch", 1: "queries"},
            "logits": {0: "batch", 1: "queries"},
        }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                graph,
                (image, coords),
                str(path),
                input_names=["image", "coords"],
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
            )
        finally:
            model.factored_decoder = factored
    proto = onnx.load(str(path))
    meta = getattr(model, "weights_metadata", None) or {}
    props = {
        "fpliif_classes": json.dumps(list(model.classes)),
        "fpliif_label_set": model.label_set.name,
        "fpliif_temperature": repr(float(model.temperature)),
        "fpliif_input_size": str(input_size),
        "fpliif_spec": json.dumps(model.spec),
        "fpliif_graph": "image (B,3,H,W) float32 [0,1], coords (B,Q,2) (x,y) in [-1,1] -> logits (B,Q,C)",
        **{f"weights_{k}": str(v) for k, v in meta.items() if k not in ("spec",)},
    }
    onnx.helper.set_model_props(proto, props)
    proto.producer_name = "fpliif"
    if check:
        onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def export_model_input_size(model: Any, default: int = 256) -> int:
    meta = getattr(model, "weights_metadata", None) or {}
    v = str(meta.get("input_size", ""))
    return int(v) if v.isdigit() else default
