"""Self-describing weight files: safetensors with the model spec in the header metadata.

The one place that reads and writes weights and what they say about themselves:

* :func:`load` / :func:`save`: a model from / to a weight file (a path, a bundled name from
  :mod:`fpliif.models.pretrained`, or None for the bundled default);
* :func:`read_metadata`: the header as a typed, frozen :class:`WeightsMetadata` (no tensor is read), and
  :func:`tensor_shapes` the tensors' names and shapes (none is read either);
  :func:`input_size_of` the input side a loaded model was trained at;
* :func:`onnx_metadata` / :meth:`WeightsMetadata.from_onnx`: the metadata of an ONNX export (written, read);
* :func:`save_state` / :func:`load_state`: a training run's resumable state (``last.pt``).

Importing this module does not import torch (the ONNX Runtime path reads ONNX metadata through it).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from ..labels import LabelSet, resolve_label_set
from . import registry

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = "1"
MIN_INPUT_SIZE = 8
MAX_INPUT_SIZE = 1024
"""Bounds of the ``input_size`` metadata (the model input side; CelebAMask-HQ's images are 1024 px)."""
DEFAULT_INPUT_SIZE = 256
"""The paper's input side (256 x 256): the input side of weights that do not record theirs, and the default
model input, training and evaluation size everywhere (the one definition; import it)."""
MAX_PARAMETERS = 500_000_000
"""Largest model a weight file may describe (the paper's has 2.3 M parameters)."""
WRITTEN_KEYS = ("fpliif_format", "spec", "mean", "std")
"""Metadata keys :func:`save` writes from the model itself (a caller's ``metadata`` may not set them)."""
ONNX_WEIGHTS_PREFIX = "weights_"
"""An ONNX export keeps its weight file's metadata under ``weights_<key>`` (the spec under ``fpliif_spec``)."""


# ---------------------------------------------------------------------------------------------- metadata
@dataclass(frozen=True, eq=False)
class WeightsMetadata(Mapping[str, str]):
    """What a weight file says about itself, parsed once (the role of timm's pretrained config).

    Typed fields: ``label_set`` (the classes), ``input_size`` (the side the weights were trained at, or an ONNX
    export's input side), ``temperature``, ``mean``/``std`` (the normalisation the model applies inside to
    [0, 1] RGB; None in files written before it was recorded), ``epoch`` and ``val_mean_f1`` (provenance);
    properties ``spec``, ``model``, ``config``, ``licence``, ``git_commit``. As a read-only mapping it is the
    header itself, strings as written (``meta["training_command"]``, ``dict(meta)``).
    """

    header: Mapping[str, str]
    path: Path | None
    label_set: LabelSet | None
    input_size: int | None
    temperature: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    epoch: int | None
    val_mean_f1: float | None

    @classmethod
    def from_header(cls, header: Mapping[str, str], path: str | Path | None = None) -> WeightsMetadata:
        """Parse and check a safetensors header written by :func:`save` (ValueError naming file and field)."""
        where = str(path or "weights")
        if "spec" not in header:
            raise ValueError(f"{where}: safetensors file has no fpliif model spec in its metadata")
        args = _spec_args(_checked_spec(header["spec"], where))
        classes = args.get("classes")
        label_set = None if classes is None else _label_set(classes, "custom", f"{where}: spec.args.classes")
        temperature = _number(args.get("temperature"), f"{where}: spec.args.temperature")
        return cls._build(header, path, label_set, temperature, header)

    @classmethod
    def from_onnx(cls, props: Mapping[str, str], path: str | Path | None = None) -> WeightsMetadata:
        """Parse the metadata of a file written by ``fpliif export onnx`` (see :func:`onnx_metadata`)."""
        where = str(path or "ONNX model")
        if "fpliif_classes" not in props:
            raise ValueError(
                f"{where}: not an fpliif ONNX export (no fpliif_classes metadata); write one with `fpliif export onnx`"
            )
        field = f"{where}: metadata fpliif_classes"
        label_set = _label_set(
            _json(props["fpliif_classes"], field, list), props.get("fpliif_label_set") or "custom", field
        )
        temperature = _number(props.get("fpliif_temperature", "1.0"), f"{where}: metadata fpliif_temperature")
        n = len(ONNX_WEIGHTS_PREFIX)
        fields = {k[n:]: v for k, v in props.items() if k.startswith(ONNX_WEIGHTS_PREFIX)}
        fields["input_size"] = props.get("fpliif_input_size")  # the export's input side
        return cls._build(props, path, label_set, temperature, fields, onnx=True)

    @classmethod
    def _build(
        cls,
        header: Mapping[str, str],
        path: Any,
        label_set: Any,
        temperature: Any,
        fields: Mapping[str, Any],
        onnx: bool = False,
    ) -> WeightsMetadata:
        """The fields every kind of file shares, each parsed here and nowhere else; errors name the key as
        the file spells it (an ONNX export: ``fpliif_input_size``, ``weights_<key>``)."""
        where = f"{path or 'weights'}: metadata"

        def name(key: str) -> str:
            if not onnx:
                return key
            return "fpliif_input_size" if key == "input_size" else ONNX_WEIGHTS_PREFIX + key

        if fields.get("config") is not None:
            _json(fields["config"], f"{where} {name('config')}", dict)
        return cls(
            header=MappingProxyType(dict(header)),
            path=None if path is None else Path(path),
            label_set=label_set,
            input_size=_input_size(fields.get("input_size"), f"{where} {name('input_size')}"),
            temperature=temperature,
            mean=_triple(fields.get("mean"), f"{where} {name('mean')}"),
            std=_triple(fields.get("std"), f"{where} {name('std')}"),
            epoch=_whole(fields.get("epoch"), f"{where} {name('epoch')}"),
            val_mean_f1=_number(fields.get("val_mean_f1"), f"{where} {name('val_mean_f1')}"),
        )

    def _field(self, key: str) -> str | None:
        """A metadata value by its weight-file key (an ONNX export stores it as ``weights_<key>``)."""
        return self.header.get(key, self.header.get(ONNX_WEIGHTS_PREFIX + key))

    @property
    def spec(self) -> dict[str, Any] | None:
        """The model spec ``{"name", "args"}`` (a fresh copy), None if the file has none."""
        text = self.header.get("spec", self.header.get("fpliif_spec"))
        try:
            return None if text is None else json.loads(text)
        except json.JSONDecodeError:
            return None

    @property
    def model(self) -> str | None:
        """The registered model name of the spec."""
        spec = self.spec
        return spec.get("name") if isinstance(spec, dict) else None

    @property
    def config(self) -> dict[str, Any] | None:
        """The training config (a fresh copy), None if not recorded."""
        text = self._field("config")
        return None if text is None else json.loads(text)

    @property
    def licence(self) -> str | None:
        return self._field("licence")

    @property
    def git_commit(self) -> str | None:
        """The commit of the training code (``+dirty`` with uncommitted changes)."""
        return self._field("git_commit")

    def __getitem__(self, key: str) -> str:
        return self.header[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.header)

    def __len__(self) -> int:
        return len(self.header)

    def __repr__(self) -> str:
        facts = {"path": self.path and str(self.path), "model": self.model, "input_size": self.input_size}
        facts.update(label_set=self.label_set and self.label_set.name, epoch=self.epoch, val_mean_f1=self.val_mean_f1)
        return f"WeightsMetadata({', '.join(f'{k}={v!r}' for k, v in facts.items())})"


def _label_set(classes: Any, name: str, where: str) -> LabelSet:
    """:func:`~fpliif.labels.resolve_label_set`, its error naming ``where``."""
    try:
        return resolve_label_set(classes, name)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from None


def _input_size(text: Any, where: str) -> int | None:
    """The one parser of ``input_size``: an integer in [MIN_INPUT_SIZE, MAX_INPUT_SIZE], or absent."""
    if text is None:
        return None
    t = str(text).strip()
    if not (t.isascii() and t.isdigit() and MIN_INPUT_SIZE <= int(t) <= MAX_INPUT_SIZE):
        raise ValueError(f"{where}: expected an integer in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}], got {text!r:.100}")
    return int(t)


def _whole(text: Any, where: str) -> int | None:
    t = None if text is None else str(text).strip()
    if t is not None and not (t.isascii() and t.isdigit()):
        raise ValueError(f"{where}: expected a non-negative integer, got {text!r:.100}")
    return None if t is None else int(t)


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"{where}: expected a finite number, got {value!r:.100}")
    return number


def _triple(text: Any, where: str) -> tuple[float, ...] | None:
    """mean/std: a JSON list of 3 finite numbers (one per RGB channel)."""
    if text is None:
        return None
    values = _json(text, where, list)
    if len(values) != 3:
        raise ValueError(f"{where}: expected 3 numbers (R, G, B), got {text!r:.100}")
    return tuple(_number(v, where) for v in values)


def _json(text: str, where: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError, TypeError) as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(value, kind):
        raise ValueError(f"{where}: expected a JSON {kind.__name__}, got {text!r:.100}")
    return value


def _checked_spec(text: str, where: str) -> dict[str, Any]:
    """The model spec JSON, checked without building anything: ``{"name", "args"}`` naming a registered model,
    only arguments its constructor has, and the constructor's own ``check_spec_args``. Every path that reads
    a spec comes here first (the registry's lookups import the built-in architectures, and so torch)."""
    where = f"{where}: spec"
    try:
        spec = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{where}: the model spec in the metadata is not valid JSON ({e})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f'{where}: expected an object {{"name": ..., "args": {{...}}}}, got {text!r:.200}')
    extra = sorted(set(spec) - {"name", "args"})
    if extra:
        raise ValueError(f"{where}: unknown field(s) {extra} (a spec has 'name' and 'args')")
    registry.check_args(spec, where=where)
    check = getattr(registry.constructor(spec["name"]), "check_spec_args", None)
    if check is not None:
        check(spec.get("args") or {}, f"{where}.args")
    return spec


def _spec_args(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's arguments over its constructor's defaults (what the model is built with)."""
    params = inspect.signature(registry.constructor(spec["name"])).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **(spec.get("args") or {})}


def read_metadata(weights: str | Path | None = None) -> WeightsMetadata:
    """The checked header metadata of a weight file (a path, a bundled name, or None for the default)."""
    from safetensors import safe_open

    path = _resolve(weights)
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        hint = "; ONNX files run with `fpliif parse --onnx FILE`" if Path(path).suffix.lower() == ".onnx" else ""
        raise ValueError(f"{path}: not a readable safetensors weight file ({e}){hint}") from None
    return WeightsMetadata.from_header(header, path)


def input_size_of(model: Any, default: int | None = DEFAULT_INPUT_SIZE) -> int | None:
    """The input side ``model``'s weights were trained at (its file's ``input_size``), else ``default``."""
    meta = getattr(model, "weights_metadata", None)
    size = meta.input_size if isinstance(meta, WeightsMetadata) else None
    return default if size is None else size


def onnx_metadata(model: Any, input_size: int) -> dict[str, str]:
    """The metadata of an ONNX export of ``model`` at ``input_size`` (read back by
    :meth:`WeightsMetadata.from_onnx`): classes, label set, temperature, input side, spec, and the weight
    file's own metadata under ``weights_<key>``."""
    meta = getattr(model, "weights_metadata", None) or {}
    return {
        "fpliif_classes": json.dumps(list(model.classes)),
        "fpliif_label_set": model.label_set.name,
        "fpliif_temperature": repr(float(model.temperature)),
        "fpliif_input_size": str(input_size),
        "fpliif_spec": json.dumps(model.spec),
        **{f"{ONNX_WEIGHTS_PREFIX}{k}": str(v) for k, v in meta.items() if k != "spec"},
    }


# ---------------------------------------------------------------------------------------------- weights
def save(
    model: Any, path: str | Path, metadata: dict[str, str] | None = None, dtype: torch.dtype | None = None
) -> Path:
    """Write ``model``'s spec and weights to ``path`` (atomically). ``dtype`` may store e.g. fp16 weights.

    ``metadata`` (provenance: ``input_size``, ``epoch``, ``config``, ...) is checked as :func:`read_metadata`
    will read it; the keys of :data:`WRITTEN_KEYS` come from the model and are refused there.
    """
    from safetensors.torch import save_file

    path = Path(path)
    reserved = set(WRITTEN_KEYS) & set(metadata or {})
    if reserved:
        raise ValueError(f"metadata: keys {sorted(reserved)} are reserved")
    header = {"fpliif_format": FORMAT_VERSION, "spec": json.dumps(model.spec), **_normalisation(model)}
    header.update({k: str(v) for k, v in (metadata or {}).items()})
    WeightsMetadata.from_header(header, path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    return _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def _normalisation(model: Any) -> dict[str, str]:
    """``mean``/``std`` metadata from the model's normalisation buffers (models without them: none)."""
    out = {}
    for key in ("mean", "std"):
        value = getattr(model, key, None)
        if value is not None and hasattr(value, "flatten") and value.numel() == 3:
            out[key] = json.dumps([float(v) for v in value.flatten()])
    return out


def load(
    weights: str | Path | None = None, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Any:
    """Rebuild a model from a weight file written by :func:`save` (a path, a bundled name, or None for the
    bundled default); returns it in eval mode (``dtype``: default float32), its metadata in
    ``model.weights_metadata`` (a :class:`WeightsMetadata`).

    The file is untrusted: its spec is checked against the registered constructor (known arguments, types,
    sane bounds) and against the tensors the header lists, its metadata as :func:`read_metadata` does, all
    before anything is allocated; NaN or infinite weights are refused. Every refusal is a ValueError naming
    the file and the field.
    """
    import torch
    from safetensors.torch import load_file

    meta = read_metadata(weights)
    path, spec = meta.path, meta.spec
    _check_tensors(spec, path, tensor_shapes(path))
    dtype = dtype or torch.float32
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


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors file's header (no tensor data is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the tensor list ({e})") from None


def _check_tensors(spec: dict[str, Any], path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Build the spec on the meta device (no memory) and compare its parameters with the file's tensors."""
    import torch

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


def _resolve(weights: str | Path | None) -> Path:
    """A bundled name, a file path, or None (the bundled default) -> the existing file (FileNotFoundError)."""
    from .pretrained import resolve_weights

    return resolve_weights(weights)


# ---------------------------------------------------------------------------------------------- run state
def save_state(state: dict[str, Any], path: str | Path) -> Path:
    """Write a training run's resumable state (``torch.save``: optimizer, RNG, ...) atomically."""
    import torch

    return _atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state` (a pickle: only the user's own run files). ValueError naming
    the file if it cannot be read."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"{path}: cannot read checkpoint ({e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a training checkpoint (got a {type(state).__name__})")
    return state


def _atomic_write(path: Path, write: Callable[[str], Any]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it over ``path`` (mode per umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
