"""``fpliif export onnx``: the model as ONNX (encoder + implicit decoder graphs; dense models: one graph)."""

from __future__ import annotations

import argparse

from ..cli import check_output_path, input_size_arg, require_torch, weights_options
from ..validate import int_arg

MIN_OPSET = 11
"""The oldest ONNX opset the graphs export to (opset 9 lacks ``Flip`` for the encoder's padding; 11-23 checked)."""


def cmd_export(args: argparse.Namespace) -> int:
    """Write the ONNX file(s) of ``--weights`` at ``--size`` (default: the weights' ``input_size`` metadata),
    then check them against torch where onnxruntime is installed. Missing folders of ``--out`` are created."""
    require_torch("it traces the torch model into the ONNX graphs")
    from ..models.checkpoint import input_size_of, load
    from .onnx_export import export_files, export_onnx, onnx_max_diff

    if args.format != "onnx":
        raise ValueError(f"export: unknown format {args.format!r}; supported: onnx")
    out = check_output_path(args.out, "--out", folder=False)  # e.g. a file where its folder should be
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--out: expected a .onnx file name, got {out}")
    model = load(args.weights)
    files = export_files(model, out, split=not args.single_graph)
    existing = [str(f) for f in files if f.exists()]
    if existing and not args.overwrite:
        raise ValueError(f"{', '.join(existing)} already exists (pass --overwrite to replace)")
    size = args.size or input_size_of(model)
    split = not args.single_graph
    try:
        export_onnx(model, out, input_size=size, dynamic=args.dynamic, opset=args.opset, split=split, int8=args.int8)
    except RuntimeError as e:  # e.g. "Unsupported onnx_opset_version: 99": past what this torch exports
        if "opset" not in str(e):
            raise
        raise ValueError(f"--opset {args.opset}: {str(e).splitlines()[0]}") from None
    shape = "dynamic" if args.dynamic else f"{size}x{size}"
    written = " + ".join(f"{f} ({f.stat().st_size / 1e6:.1f} MB)" for f in files)
    msg = f"wrote {written}; input {shape}"
    try:
        msg += f"; onnxruntime vs torch max |logit diff| {onnx_max_diff(model, out, size):.2e}"
    except ImportError:
        msg += "; onnxruntime not installed, not verified"
    print(msg)
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    """Add ``fpliif export``."""
    p = sub.add_parser(
        "export",
        parents=[weights_options()],
        help="export the model (encoder + implicit decoder; dense models: one graph) to ONNX",
        description="Export to ONNX as two graphs: OUT (encoder: image (B,3,H,W) in [0,1] -> cells, the latent "
        "grid) and OUT's NAME.decoder.onnx (cells + coords (B,Q,2) (x, y) in [-1,1] -> logits (B,Q,C)); the "
        "encoder runs once per face, Q is dynamic, so the pair serves any output size. Load the pair by "
        "OUT (--onnx OUT). --single-graph writes one graph image + coords -> logits instead. Dense models "
        "(SegFace, STN-iCNN) export as one graph image (B,3,N,N) -> logits (B,C,N,N) at the input size N "
        "(--dynamic: the batch only).",
    )
    p.add_argument("format", choices=["onnx"], help="export format")
    p.add_argument(
        "--out",
        required=True,
        help="output .onnx file (the decoder goes beside it); missing folders are created, as for parse --out",
    )
    p.add_argument(
        "--size",
        type=input_size_arg,
        default=None,
        help="input image size N (default: the input size the weights record in their metadata, the size they "
        "were trained at; `fpliif info` prints it)",
    )
    p.add_argument("--dynamic", action="store_true", help="dynamic batch and input height/width")
    p.add_argument(
        "--single-graph", action="store_true", help="one graph image + coords -> logits (re-encodes per call)"
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="quantise the decoder graph's hidden MLP layers to int8 (onnxruntime dynamic quantisation; "
        "accuracy and speed: docs/performance.md)",
    )
    p.add_argument(
        "--opset",
        type=int_arg(MIN_OPSET),
        default=17,
        help=f"ONNX opset version, {MIN_OPSET} or later up to what torch exports (17)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=cmd_export)
