"""Self-describing weight files: safetensors with the model spec in the header metadata."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import registry

FORMAT_VERSION = "1"


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
    """Rebuild a model from a weight file written by :func:`save`; returns it in eval mode."""
    path = _existing(path)
    meta = read_metadata(path)
    try:
        spec = json.loads(meta["spec"])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: model spec in the metadata is not valid JSON ({e})") from None
    model = registry.make(spec).to(dtype)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read weights ({e})") from None
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the model spec ({e})") from None
    model.weights_metadata = meta
    return model.to(device).eval()


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path
