"""Export an fpliif model (encoder + implicit decoder) to ONNX: two graphs (default) or one.

Split (default), two files, so the encoder runs once per face however many query chunks follow:

* ``NAME.onnx``, the encoder: ``image`` (B, 3, H, W) float32 in [0, 1] -> ``cells`` (B, h, w, F), the latent
  grid as the decoder reads it (:meth:`FPLIIF.prepare`: the first decoder layer's per-cell part);
* ``NAME.decoder.onnx``: ``cells`` + ``coords`` (B, Q, 2) float32 (x, y) in [-1, 1] -> ``logits`` (B, Q, C).

The encoder file names its decoder in its metadata (``fpliif_decoder``); load the pair by the encoder's path.
``split=False`` writes the single graph ``image`` + ``coords`` -> ``logits`` of earlier versions (the encoder
re-runs for every call). The number of queries Q is always dynamic, so the files serve every output size
(build pixel-centre coordinates with :func:`fpliif.infer.geometry.pixel_centers`); ``dynamic=True`` also
makes the batch and the input height/width (and so the latent grid) dynamic.

The graphs are the model's own code (:meth:`FPLIIF.prepare` then :meth:`FPLIIF.query`, with the factored first
decoder layer), written so that tracing keeps the batch, the input size and the number of queries dynamic.
Uses the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``), which needs only the ``onnx`` package.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import DEFAULT_INPUT_SIZE, onnx_metadata
from .onnx_backend import EXPORT_ID

OPSET = 17


class EncoderGraph(nn.Module):
    """image -> cells: an FP-LIIF model's encoder and :meth:`prepare` (factored latent grid)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        m = self.m
        return m.prepare(m.encoder((image - m.mean) / m.std)).cells


class DecoderGraph(nn.Module):
    """(cells, coords) -> logits: an FP-LIIF model's :meth:`query` on a factored latent grid."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, cells: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        from ..models.fpliif import LatentGrid

        return self.m.query(LatentGrid(cells, None, True), coords)


class ExportGraph(nn.Module):
    """(image, coords) -> logits in one graph: :class:`EncoderGraph` then :class:`DecoderGraph`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encode = EncoderGraph(model)
        self.decode = DecoderGraph(model)

    def forward(self, image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(image), coords)


def decoder_path(path: str | Path) -> Path:
    """Where the decoder graph of the split export at ``path`` goes: ``NAME.onnx`` -> ``NAME.decoder.onnx``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.decoder.onnx")


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: int = DEFAULT_INPUT_SIZE,
    dynamic: bool = False,
    opset: int = OPSET,
    check: bool = True,
    split: bool = True,
) -> Path:
    """Write ``model`` as ONNX to ``path`` (fp32, CPU) with fpliif metadata; returns the path.

    ``split`` (default) also writes the decoder graph to :func:`decoder_path` (``path`` holds the encoder).
    """
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
    batch = 2 if dynamic else 1
    image = torch.rand(batch, 3, input_size, input_size)
    coords = torch.rand(batch, 97, 2) * 2 - 1
    queries = {1: "queries"} if not dynamic else {0: "batch", 1: "queries"}
    image_axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {}
    props = onnx_metadata(model, input_size)
    try:
        if not split:
            _export(
                ExportGraph(model),
                (image, coords),
                path,
                ["image", "coords"],
                ["logits"],
                {"image": image_axes, "coords": queries, "logits": queries},
                opset,
            )
            _finish(path, {**props, "fpliif_part": "combined", "fpliif_graph": GRAPH_COMBINED}, check)
            return path
        dec = decoder_path(path)
        _export(
            EncoderGraph(model),
            (image,),
            path,
            ["image"],
            ["cells"],
            {"image": image_axes, "cells": {0: "batch", 1: "h", 2: "w"} if dynamic else {}},
            opset,
        )
        with torch.no_grad():
            cells = EncoderGraph(model)(image)
        _export(
            DecoderGraph(model),
            (cells, coords),
            dec,
            ["cells", "coords"],
            ["logits"],
            {"cells": {0: "batch", 1: "h", 2: "w"} if dynamic else {}, "coords": queries, "logits": queries},
            opset,
        )
    finally:
        model.factored_decoder = factored
    props[EXPORT_ID] = _export_id(path, dec)
    _finish(path, {**props, "fpliif_part": "encoder", "fpliif_decoder": dec.name, "fpliif_graph": GRAPH_ENCODER}, check)
    _finish(dec, {**props, "fpliif_part": "decoder", "fpliif_encoder": path.name, "fpliif_graph": GRAPH_DECODER}, check)
    return path


GRAPH_COMBINED = "image (B,3,H,W) float32 [0,1], coords (B,Q,2) (x,y) in [-1,1] -> logits (B,Q,C)"
GRAPH_ENCODER = "image (B,3,H,W) float32 [0,1] -> cells (B,h,w,F) (the decoder's latent grid)"
GRAPH_DECODER = "cells (B,h,w,F), coords (B,Q,2) (x,y) in [-1,1] -> logits (B,Q,C)"


def _export(
    graph: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    axes: dict[str, dict[int, str]],
    opset: int,
) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={k: v for k, v in axes.items() if v},
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )


def _export_id(*paths: Path) -> str:
    """The id both graphs of a split export carry (:data:`~fpliif.infer.onnx_backend.EXPORT_ID`): a hash of
    the two graphs as exported, so the same model exported again gets the same id."""
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.read_bytes())
    return digest.hexdigest()[:16]


def _finish(path: Path, props: dict[str, str], check: bool) -> None:
    """Write the fpliif metadata into the exported file (and check it)."""
    import onnx

    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, props)
    proto.producer_name = "fpliif"
    if check:
        onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
