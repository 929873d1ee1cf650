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

Dense models (SegFace, STN-iCNN: logits on a pixel grid, no implicit decoder) export as one graph ``image``
(B, 3, N, N) -> ``logits`` (B, C, N, N) at the input size N (:func:`_export_dense`; ``dynamic``: the batch only).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
from torch import nn

from ..adaptive import is_implicit
from ..models.checkpoint import input_size_of, onnx_metadata
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
    input_size: int | None = None,
    dynamic: bool = False,
    opset: int = OPSET,
    check: bool = True,
    split: bool = True,
    int8: bool = False,
) -> Path:
    """Write ``model`` as ONNX to ``path`` (fp32, CPU) with fpliif metadata; returns the path.

    ``input_size``: the image side traced (None: the weights' own, :func:`~fpliif.models.checkpoint.input_size_of`).

    ``split`` (default) also writes the decoder graph to :func:`decoder_path` (``path`` holds the encoder);
    ``int8`` quantises that graph's hidden MLP layers (:func:`quantize_decoder`; needs onnxruntime).
    A dense model is written by :func:`_export_dense` (one graph; ``split`` does not apply).
    """
    if int8 and not (split and is_implicit(model)):
        raise ValueError("int8: quantises the decoder graph of an FP-LIIF split export (not --single-graph)")
    if input_size is None:
        input_size = input_size_of(model)
    if not is_implicit(model):
        return _export_dense(model, path, input_size, dynamic, opset, check)
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
        if int8:
            quantize_decoder(model, dec)
            props["fpliif_int8"] = INT8_NOTE
    finally:
        model.factored_decoder = factored
    props[EXPORT_ID] = _export_id(path, dec)
    _finish(path, {**props, "fpliif_part": "encoder", "fpliif_decoder": dec.name, "fpliif_graph": GRAPH_ENCODER}, check)
    _finish(dec, {**props, "fpliif_part": "decoder", "fpliif_encoder": path.name, "fpliif_graph": GRAPH_DECODER}, check)
    return path


class DenseGraph(nn.Module):
    """image -> logits at the input size N: a dense model's ``model(image, size=(N, N))``."""

    def __init__(self, model: nn.Module, size: int):
        super().__init__()
        self.m, self.size = model, (size, size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.m(image, size=self.size)


def _export_dense(model: nn.Module, path: str | Path, input_size: int, dynamic: bool, opset: int, check: bool) -> Path:
    """Write a dense model (SegFace, STN-iCNN) as one graph ``image`` (B, 3, N, N) -> ``logits`` (B, C, N, N),
    N = ``input_size``; returns the path. ``dynamic`` makes the batch dynamic, not N: the models' shape logic
    (SegFace's resampling to N, STN-iCNN's resize to its coarse side) is traced as constants at N. STN-iCNN's
    crops (``grid_sample``) need ``opset`` >= 16."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu", torch.float32).eval()
    image = torch.rand(2 if dynamic else 1, 3, input_size, input_size)
    axes = {"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic else {}
    _export(DenseGraph(model, input_size), (image,), path, ["image"], ["logits"], axes, opset)
    props = onnx_metadata(model, input_size)
    _finish(path, {**props, "fpliif_part": "dense", "fpliif_graph": GRAPH_DENSE}, check)
    return path


def export_files(model: nn.Module, path: str | Path, split: bool = True) -> list[Path]:
    """The files :func:`export_onnx` writes for ``model`` at ``path``: the graph, and a split export's decoder."""
    path = Path(path)
    return [path, decoder_path(path)] if split and is_implicit(model) else [path]


def onnx_max_diff(model: nn.Module, path: str | Path, input_size: int, output_size: int = 64) -> float:
    """Max |logit difference| of the export at ``path`` on onnxruntime (CPU) and ``model`` in torch, on one
    random ``input_size``² image (dense exports: at their own output size; FP-LIIF: decoded at ``output_size``²).
    ImportError without onnxruntime."""
    import numpy as np

    x = torch.rand(1, 3, input_size, input_size)
    if is_implicit(model):
        from .onnx_backend import OnnxModel

        size = (output_size, output_size)
        got = OnnxModel(path)(x.numpy(), size)
    else:
        import onnxruntime as ort

        size = (input_size, input_size)
        (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    with torch.inference_mode():
        ref = model(x, size=size).numpy()
    return float(np.abs(got - ref).max())


GRAPH_DENSE = "image (B,3,N,N) float32 [0,1] -> logits (B,C,N,N)"
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


INT8_NOTE = "decoder MLP hidden layers: int8 weights per output channel, dynamic (onnxruntime quantize_dynamic)"


def quantize_decoder(model: nn.Module, path: Path) -> None:
    """Rewrite the decoder graph at ``path`` with ``model``'s hidden MLP layers dynamically quantised (int8
    weights per output channel, inputs quantised per call: onnxruntime's ``quantize_dynamic``), the layers that
    ``amp="int8"`` quantises in torch (:mod:`fpliif.quantize`); the position part of the first layer and the
    class-logits layer stay fp32. Accuracy and speed: docs/performance.md."""
    import logging
    import tempfile

    import numpy as np
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load(str(path))
    weights = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    made_by = {out: node for node in proto.graph.node for out in node.output}
    hidden = [m.weight.detach().numpy().T for m in list(model.mlp)[1:-1] if isinstance(m, nn.Linear)]
    keep = []
    for node in (n for n in proto.graph.node if n.op_type == "MatMul"):
        src = made_by.get(node.input[1])
        if src is not None and src.op_type == "Identity" and src.input[0] in weights:
            node.input[1] = src.input[0]  # ensemble members 2-4 read the weights through Identity: unquantisable
        w = weights.get(node.input[1])
        if w is None or not any(w.shape == h.shape and np.array_equal(w, h) for h in hidden):
            keep.append(node.name)
    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "decoder.onnx"
        onnx.save(proto, str(fp32))
        root.setLevel(logging.ERROR)  # quantize_dynamic's advice to run shape pre-processing (not needed here)
        try:
            quantize_dynamic(fp32, path, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep)
        finally:
            root.setLevel(level)
