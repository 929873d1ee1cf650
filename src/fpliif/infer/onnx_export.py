"""Export an fpliif model (encoder + implicit decoder) to one ONNX file.

Graph: ``image`` (B, 3, H, W) float32 in [0, 1], ``coords`` (B, Q, 2) float32 (x, y) in [-1, 1]
-> ``logits`` (B, Q, C). The number of queries Q is always dynamic, so one file serves every output size
(build pixel-centre coordinates with :func:`fpliif.infer.geometry.pixel_centers`); ``dynamic=True`` also
makes the batch and the input height/width dynamic.

The model's own code is exported through a thin wrapper that reuses its layers but spells three steps
in export-friendly form (same arithmetic): the 3x3 feature unfolding as 9 shifted slices of a padded
tensor (instead of ``F.unfold``), the latent grid size as a runtime shape (instead of Python ints frozen
by tracing), and the global feature broadcast without a traced ``expand`` size. Uses the TorchScript
exporter (``torch.onnx.export(..., dynamo=False)``), which needs only the ``onnx`` package.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.fpliif import ensemble_weights

OPSET = 17


class ExportGraph(nn.Module):
    """(image, coords) -> logits of an FP-LIIF model, traceable with dynamic shapes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def latent_codes(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = self.m
        g = z.mean(dim=(2, 3)) if m.global_feature else None
        if m.unfold:
            p = F.pad(z, (1, 1, 1, 1))
            # F.unfold(z, 3, padding=1) channel order: c * 9 + ki * 3 + kj
            shifts = [
                p[
                    :,
                    :,
                    ki : p.shape[2] - 2 + ki if ki < 2 else None,
                    kj : p.shape[3] - 2 + kj if kj < 2 else None,
                ]
                for ki in range(3)
                for kj in range(3)
            ]
            feat = torch.stack(shifts, dim=2).flatten(1, 2)
        else:
            feat = z
        return m.reduce(feat.permute(0, 2, 3, 1)), g

    def forward(self, image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        m = self.m
        z = m.encoder((image - m.mean) / m.std)
        zhat, g = self.latent_codes(z)
        d = zhat.shape[-1]
        flat = zhat.flatten(1, 2)
        size = torch._shape_as_tensor(zhat)[1:3].flip(0).to(coords.dtype)  # (w, h)
        wi = size[0].to(torch.int64)
        shifts = [(sx, sy) for sx in (-1, 1) for sy in (-1, 1)] if m.local_ensemble else [(0, 0)]
        preds, areas = [], []
        for sx, sy in shifts:
            shifted = coords + torch.tensor([sx, sy], dtype=coords.dtype) / size + 1e-6
            idx = torch.floor((shifted + 1) / 2 * size)
            idx = torch.minimum(torch.clamp(idx, min=0), size - 1)
            center = (2 * idx + 1) / size - 1
            lin = idx[..., 1].to(torch.int64) * wi + idx[..., 0].to(torch.int64)
            code = torch.gather(flat, 1, lin.unsqueeze(-1).expand(-1, -1, d))
            rel = (coords - center) * size
            parts = [code]
            if g is not None:
                parts.append(g.unsqueeze(1) * torch.ones_like(coords[..., :1]))
            parts.append(rel if m.relative_coords else coords)
            preds.append(m.mlp(torch.cat(parts, dim=-1)))
            areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
        if len(preds) == 1:
            return preds[0]
        weights = ensemble_weights(areas)
        out = preds[0] * weights[0].unsqueeze(-1)
        for p, wt in zip(preds[1:], weights[1:], strict=True):
            out = out + p * wt.unsqueeze(-1)
        return out


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

    for attr in ("encoder", "reduce", "mlp", "unfold", "local_ensemble"):
        if not hasattr(model, attr):
            raise ValueError(
                f"export: only FP-LIIF models can be exported (missing {attr!r} on {type(model).__name__})"
            )
    if input_size < 2 * model.encoder.stride:
        raise ValueError(f"size: input size {input_size} is too small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu", torch.float32).eval()
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
