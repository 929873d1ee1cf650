"""Self-describing weight files: safetensors with the model spec in the header metadata."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import registry

FORMAT_VERSION = "1"
MIN_INPUT_SIZE = 8
MAX_INPUT_SIZE = 1024
"""Bounds of the ``input_size`` metadata (the model input side; CelebAMask-HQ's images are 1024 px)."""
MAX_PARAMETERS = 500_000_000
"""Largest model a weight file may describe (the paper's has 2.3 M parameters)."""


def save(
    model: Any, path: str | Path, metadata: dict[str, str] | None = None, dtype: torch.dtype | None = None
) -> Path:
    """Write ``model``'s spec and weights to ``path`` (atomically). ``dtype`` may store e.g. fp16 weights."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    reserved = {"fpliif_format", "spec"} & set(metadata or {})
    if reserved:
        raise ValueError(f"metadata: keys {sorted(reserved)} are reserved")
    meta = {"fpliif_format": FORMAT_VERSION, "spec": json.dumps(model.spec)}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a weight file (spec, format version, provenance)."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors weight file ({e})") from None
    if "spec" not in meta:
        raise ValueError(f"{path}: safetensors file has no fpliif model spec in its metadata")
    return meta


def load(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """Rebuild a model from a weight file written by :func:`save`; returns it in eval mode.

    The file is untrusted: its spec is checked against the registered constructor (known arguments, types,
    sane bounds) and against the tensors the header lists, its ``input_size`` against
    :data:`MAX_INPUT_SIZE`, all before anything is allocated; NaN or infinite weights are refused. Every
    refusal is a ValueError naming the file and the field.
    """
    path = _existing(path)
    meta = read_metadata(path)
    spec = model_spec(meta, path)
    check_metadata(meta, path)
    _check_tensors(spec, path, _tensor_shapes(path))
    model = registry.make(spec).to(dtype)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read weights ({e})") from None
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{path}: tensor {k!r} holds NaN or infinite values (a diverged or damaged file)")
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the model spec ({e})") from None
    model.weights_metadata = meta
    return model.to(device).eval()


def model_spec(meta: dict[str, str], path: str | Path = "weights") -> dict[str, Any]:
    """The model spec in a weight file's metadata, checked without building anything: a JSON object
    ``{"name", "args"}`` naming a registered model, only arguments its constructor has, and the constructor's
    own type and bound checks (``check_spec_args``). ValueError naming the file and the field."""
    where = f"{path}: spec"
    try:
        spec = json.loads(meta["spec"])
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{where}: the model spec in the metadata is not valid JSON ({e})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f'{where}: expected an object {{"name": ..., "args": {{...}}}}, got {meta["spec"]!r:.200}')
    extra = sorted(set(spec) - {"name", "args"})
    if extra:
        raise ValueError(f"{where}: unknown field(s) {extra} (a spec has 'name' and 'args')")
    registry.check_args(spec, where=where)
    check = getattr(registry.constructor(spec["name"]), "check_spec_args", None)
    if check is not None:
        check(spec.get("args") or {}, f"{where}.args")
    return spec


def check_metadata(meta: dict[str, str], path: str | Path = "weights") -> None:
    """Metadata the loaders act on: ``input_size`` (the model input side) must be an integer in
    [:data:`MIN_INPUT_SIZE`, :data:`MAX_INPUT_SIZE`]."""
    text = meta.get("input_size")
    if text is not None:
        ok = text.strip().isdigit() and MIN_INPUT_SIZE <= int(text) <= MAX_INPUT_SIZE
        if not ok:
            raise ValueError(
                f"{path}: metadata input_size: expected an integer in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}], "
                f"got {text!r:.100}"
            )


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the file's header (no tensor data is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the tensor list ({e})") from None


def _check_tensors(spec: dict[str, Any], path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Build the spec on the meta device (no memory) and compare its parameters with the file's tensors."""
    try:
        with torch.device("meta"):
            model = registry.make(spec)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: spec: invalid model arguments ({e})") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    total = sum(math.prod(s) for s in expected.values())
    if total > MAX_PARAMETERS:
        raise ValueError(f"{path}: spec: the model would have {total:,} parameters (limit {MAX_PARAMETERS:,})")
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{k} {list(shapes[k])} (spec: {list(s)})" for k, s in expected.items() if k in shapes and shapes[k] != s]
    if missing or unexpected or wrong:
        parts = [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {unexpected[:5]}" if unexpected else "",
            f"wrong shape {wrong[:3]}" if wrong else "",
        ]
        raise ValueError(f"{path}: weights do not match the model spec: {'; '.join(p for p in parts if p)}")


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path
