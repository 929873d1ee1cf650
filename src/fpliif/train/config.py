"""Training configs: YAML files merged over defaults, with ``key.sub=value`` command-line overrides.

The schema is the dataclasses below: every key, its type, its default (:data:`DEFAULTS` is derived from
them) and its range. It is strict at every depth: an unknown key anywhere, a value of the wrong type or out
of range is a :class:`~fpliif.errors.ConfigError` naming the full key path (and the closest valid key),
raised by :func:`load_config` before anything is written. The free-form parts are checked by their owners:
``model.args`` against the registered constructor's signature (:func:`fpliif.models.registry.check_args`; nothing
is built) and ``data.augment`` by :func:`fpliif.data.transforms.check_augment`. Configs stay plain dicts:
the YAML format, ``config.yaml`` of a run and the config inside checkpoints are unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from ..errors import ConfigError
from ..models.checkpoint import DEFAULT_INPUT_SIZE
from ..precision import AMP_CHOICES


def _field(default: Any = None, **rules: Any) -> Any:
    """A schema field: its default and checks (``ge``/``gt``/``lt`` on numbers and list items, ``odd``,
    ``nonempty``, ``required``, ``check(value, key)``)."""
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return field(default_factory=default, metadata=rules)
    if isinstance(default, (list, dict)):
        return field(default_factory=functools.partial(copy.deepcopy, default), metadata=rules)
    return field(default=default, metadata=rules)


def _check_layout(value: str, key: str) -> str:
    from ..data.layouts import LAYOUTS

    if value != "auto" and value not in LAYOUTS:
        raise ConfigError(key, f"unknown dataset layout {value!r}; known layouts: auto, {', '.join(LAYOUTS)}")
    return value


def _check_augment(value: Any, key: str) -> Any:
    """``None``, ``"paper"`` or a mapping of augmentation steps (keys checked here, values by the transform)."""
    from ..data.transforms import AUGMENT_KEYS, BACKGROUND_KEYS, DEGRADE_KEYS, JITTER_KEYS, check_augment

    if isinstance(value, dict):
        for name in value:
            if name not in AUGMENT_KEYS:
                raise ConfigError.unknown_key(f"{key}.{name}", sorted(AUGMENT_KEYS))
        for step, known in (("color_jitter", JITTER_KEYS), ("degrade", DEGRADE_KEYS), ("background", BACKGROUND_KEYS)):
            sub = value.get(step)
            for name in sub if isinstance(sub, dict) else ():
                if name not in known:
                    raise ConfigError.unknown_key(f"{key}.{step}.{name}", sorted(known))
    try:
        check_augment(value)
    except ValueError as e:  # "augment 'crop': ..." / "augment color_jitter: ..." -> data.augment.crop: ...
        step, _, reason = str(e).removeprefix("augment").partition(": ")
        step = step.strip().strip("'").replace(" ", ".")
        raise ConfigError(f"{key}.{step}" if step else key, reason) from None
    return value


# ------------------------------------------------------------------------------------------------ schema
@dataclass
class ModelConfig:
    name: str = "fpliif"  # a registered architecture (fpliif.models.available())
    args: dict[str, Any] = _field({})  # its constructor's arguments, checked against the signature

    @staticmethod
    def check(section: dict[str, Any], key: str) -> None:
        """The names of ``args`` against the constructor's signature, then their values by the constructor's own
        ``check_spec_args`` (the checks a weights file's spec gets), so ``--dry-run`` finds them."""
        from ..models import check_args
        from ..models.registry import constructor

        name = section.get("name", ModelConfig.name)
        check_args({"name": name, "args": section.get("args")}, where=key)
        check_values = getattr(constructor(name), "check_spec_args", None)
        if check_values is not None:
            check_values(section.get("args") or {}, f"{key}.args")


@dataclass
class DataConfig:
    root: str | list[str] | None = _field(None, nonempty=True)  # one dataset root or several; required
    layout: str = _field("folder", check=_check_layout)  # or auto: detected from the root's folders
    # folder layout only: label-set name or list; None = the dataset's default
    classes: str | list[str] | None = None
    train_split: str = "train"
    val_split: str | None = "val"  # null: no validation
    size: int = _field(DEFAULT_INPUT_SIZE, ge=1)
    # "paper" or a dict of steps: see fpliif.data.build_train_transform
    augment: str | dict[str, Any] | None = _field(None, check=_check_augment)
    workers: int = _field(2, ge=0)
    skip_bad: bool = False
    # celebamask-hq: the merged-mask cache folder `fpliif data prepare --cache DIR` wrote; null = the default places
    cache: str | None = _field(None, nonempty=True)
    preload: bool = False  # decode + resize every image once into memory (~12·size² bytes each); same samples


@dataclass
class ScheduleConfig:
    type: Literal["multistep", "constant"] = _field("multistep", required=True)
    milestones: list[int] = _field([200, 300, 350], ge=0)  # epochs after which the rate is multiplied by gamma
    gamma: float = _field(0.1, gt=0)
    # optimizer steps at the start of the run over which the rate rises linearly to its scheduled value (step k of
    # n trains at (k+1)/n of it): fresh Adam moments take full-size steps, which a warm start (init_weights) feels
    warmup: int = _field(0, ge=0)


@dataclass
class QuerySamplingConfig:
    type: Literal["uniform", "balanced"] = _field("uniform", required=True)
    edge_boost: float = _field(0.0, ge=0)  # balanced only: x(1 + edge_boost) on label edges

    @staticmethod
    def check(section: dict[str, Any], key: str) -> None:
        if "edge_boost" in section and section.get("type") != "balanced":
            raise ConfigError(f"{key}.edge_boost", f"applies to type balanced only, not {section.get('type')}")


@dataclass
class TrainConfig:
    epochs: int = _field(400, ge=1)
    batch_size: int = _field(33, ge=1)  # per process under torchrun
    lr: float = _field(5.0e-4, gt=0)
    weight_decay: float = _field(0.0, ge=0)
    schedule: ScheduleConfig = _field(ScheduleConfig)
    edge_lambda: float = _field(10.0, ge=0)
    edge_kernel: int = _field(3, ge=3, odd=True)
    sample_queries: int | None = _field(4096, ge=1)  # queries per image; null = the full output grid
    # auto | none | bf16 | fp16: auto = bf16 where the device has it natively, else fp32
    amp: Literal[AMP_CHOICES] = "auto"
    # or {type: balanced, edge_boost: 2.0}: see docs/training.md
    query_sampling: QuerySamplingConfig = _field({"type": "uniform"})
    dice_weight: float = _field(0.0, ge=0)  # > 0 adds dice_weight * soft Dice (not in the paper)
    ce_weight: float = _field(1.0, ge=0)  # weight of the cross-entropy term (SegFace: 0.5 CE + 0.5 Dice)
    # EMA decay of the weights (e.g. 0.999): evaluated, checkpointed and saved as the weights
    ema: float | None = _field(None, gt=0, lt=1)
    channels_last: bool = False
    grad_clip: float | None = _field(None, ge=0)  # max gradient norm; null or 0 = off
    class_weights: Literal["inverse_sqrt_freq"] | None = None  # computed once from the training masks
    seed: int = _field(0, ge=0)
    val_every: int = _field(1, ge=1)
    val_batch_size: int = _field(8, ge=1)
    max_steps_per_epoch: int | None = _field(None, ge=0)  # for smoke runs; null or 0 = no limit
    max_val_images: int | None = _field(None, ge=0)  # null or 0 = the whole val split
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = _field(None, ge=0)  # torch CPU threads per process; null or 0 = torch's default
    # bundled weights name or .safetensors file to start from (matching tensors; other classes: a fresh head)
    init_weights: str | None = None


@dataclass
class Config:
    model: ModelConfig = _field(ModelConfig)
    data: DataConfig = _field(DataConfig)
    train: TrainConfig = _field(TrainConfig)
    out: str = _field("runs/default", nonempty=True)


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


DEFAULTS: dict[str, Any] = _defaults(Config)
"""The default config (derived from the schema; the order of keys is the order of ``config.yaml``)."""


# ------------------------------------------------------------------------------------------------ checking
_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


class _Mismatch(Exception):
    """The value is not of the annotated type (the caller names the key and the expected type)."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _describe(tp: Any, rules: dict[str, Any] | None = None) -> str:
    """Words for an annotation and its rules: ``int | None`` with ``ge=1`` -> "an integer >= 1 or null"."""
    rules = rules or {}
    bound = "".join(f" {op} {rules[name]}" for name, op in (("ge", ">="), ("gt", ">"), ("lt", "<")) if name in rules)
    if "gt" in rules and "lt" in rules:
        bound = f" in ({rules['gt']}, {rules['lt']})"
    nonempty = "non-empty " if rules.get("nonempty") else ""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        alts = [a for a in get_args(tp) if a is not type(None)]
        words = [_describe(a, rules) for a in alts] + (["null"] if type(None) in get_args(tp) else [])
        return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]
    if origin is Literal:
        return "one of " + ", ".join("null" if a is None else str(a) for a in get_args(tp))
    if origin is list:
        (item,) = get_args(tp)
        return f"a {nonempty}list of {_PLURAL.get(item, 'values')}{bound}"
    if tp is bool:
        return "true or false"
    if tp is int:
        return f"an {'odd ' if rules.get('odd') else ''}integer{bound}"
    if tp is float:
        return f"a number{bound}"
    if tp is str:
        return f"a {nonempty}string"
    return "a mapping"


def _typed(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (returned normalised); :class:`_Mismatch` if it is not."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for alt in get_args(tp):
            try:
                return _typed(value, alt, key)
            except _Mismatch:
                continue
        raise _Mismatch
    if tp is type(None) or origin is Literal:
        allowed = (None,) if tp is type(None) else get_args(tp)
        if any(value == a and type(value) is type(a) for a in allowed):
            return value
        raise _Mismatch
    if tp in (bool, str):
        if type(value) is not tp:
            raise _Mismatch
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Mismatch
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise _Mismatch from None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise _Mismatch
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        (item,) = get_args(tp)
        return [_typed(v, item, key) for v in value]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Mismatch
        return check_section(value, tp, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return value
    raise TypeError(f"{key}: unsupported schema type {tp!r}")  # a bug in the schema, not in the config


def _in_bounds(value: Any, rules: dict[str, Any]) -> bool:
    if isinstance(value, list):
        return not (rules.get("nonempty") and not value) and all(_in_bounds(v, rules) for v in value)
    if isinstance(value, str):
        return not (rules.get("nonempty") and not value)
    if isinstance(value, (int, float)):
        return (
            ("ge" not in rules or value >= rules["ge"])
            and ("gt" not in rules or value > rules["gt"])
            and ("lt" not in rules or value < rules["lt"])
            and (not rules.get("odd") or value % 2 == 1)
        )
    return True


def check_value(value: Any, tp: Any, rules: dict[str, Any], key: str) -> Any:
    """One setting checked against its annotation and rules; returns it normalised or raises ConfigError."""
    try:
        value = _typed(value, tp, key)
    except _Mismatch:
        raise ConfigError(key, f"expected {_describe(tp, rules)}, got {value!r}") from None
    if value is not None and not _in_bounds(value, rules):
        raise ConfigError(key, f"expected {_describe(tp, rules)}, got {value!r}")
    if value is not None and "check" in rules:
        value = rules["check"](value, key)
    return value


def check_section(section: dict[str, Any], cls: type, path: str = "") -> dict[str, Any]:
    """A mapping checked against a schema dataclass: no unknown key, every value typed and in range.

    Keys may be missing (defaults fill them in :func:`load_config`), except those marked ``required``.
    Returns a new dict with the values normalised, in the given key order.
    """
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for name, value in section.items():
        key = f"{path}.{name}" if path else str(name)
        if name not in fields:
            raise ConfigError.unknown_key(key, list(fields))
        out[name] = check_value(value, hints[name], dict(fields[name].metadata), key)
    for name, f in fields.items():
        if f.metadata.get("required") and name not in out:
            raise ConfigError(f"{path}.{name}" if path else name, f"missing (expected {_describe(hints[name])})")
    if hasattr(cls, "check"):
        cls.check(out, path)
    return out


def _check_key_path(parts: list[str]) -> None:
    """An override's key names a field at every depth where the schema is fixed (not in free-form values)."""
    cls: Any = Config
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            raise ConfigError.unknown_key(".".join(parts[: depth + 1]), names)
        cls = _hints(cls)[part]


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("args", "augment", "query_sampling"):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


RESUMABLE: tuple[str, ...] = (
    "out",
    "data.root",
    "data.workers",
    "data.preload",
    "data.skip_bad",
    "data.cache",
    "data.val_split",
    "train.epochs",
    "train.val_every",
    "train.val_batch_size",
    "train.max_val_images",
    "train.device",
    "train.threads",
    "train.init_weights",
)
"""The settings a ``--resume`` may change: where the files are, how fast it runs, how long and how it is validated.
Every other one is the saved run's: its optimizer, schedule, random streams and augmentations go on from
``last.pt``, so a new value there would not be used (and ``init_weights`` is not read again)."""


def resume_changes(saved: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    """``key: saved -> new`` for each setting outside :data:`RESUMABLE` that ``cfg`` changes against the config
    a run was started with (``saved``; keys it predates count as their defaults)."""
    old, new = _flat(deep_merge(DEFAULTS, saved)), _flat(cfg)
    keys = [k for k in new if not any(k == r or k.startswith(r + ".") for r in RESUMABLE)]
    return [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in keys if old.get(k) != new[k]]


def _flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of the nested sections (lists and a model's ``args`` compared whole)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and v and k != "args":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _one_line(error: Exception) -> str:
    """PyYAML's error text (several lines, pointing at the spot) on one line."""
    return " ".join(str(error).split())


def apply_override(cfg: dict[str, Any], text: str) -> None:
    """Apply one ``a.b.c=value`` override; ``value`` is parsed as YAML (numbers, lists, null...)."""
    if "=" not in text:
        raise ConfigError("", f"override {text!r}: expected key=value (e.g. train.epochs=10)")
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    _check_key_path(parts)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(key.strip(), f"override value {raw!r} is not valid YAML ({_one_line(e)})") from None
    node = cfg
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            if p in node and node[p] is not None:
                raise ConfigError("", f"override {text!r}: {p!r} is not a section")
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one section", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """DEFAULTS <- YAML file <- overrides, validated (:class:`ConfigError` before anything is written)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            loaded = yaml.load(path.read_text(), Loader=_StrictLoader) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({_one_line(e)})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        try:
            check_section(loaded, Config)  # the file's own keys and values, named with the file
        except ConfigError as e:
            raise ConfigError(e.key, e.reason, source=str(path)) from None
        cfg = deep_merge(cfg, loaded)
    for text in overrides:
        apply_override(cfg, text)
    validate(cfg)
    return cfg


def validate(cfg: dict[str, Any]) -> None:
    """Check a whole config against the schema (in place: values normalised, e.g. ``"1e-3"`` -> 0.001)."""
    checked = check_section(cfg, Config)
    for name in ("model", "data", "train"):
        if name not in checked:
            raise ConfigError(name, "missing section")
    if checked["data"].get("root") is None:
        raise ConfigError("data.root", "no dataset root given (set it in the config or pass data.root=PATH)")
    cfg.clear()
    cfg.update(checked)


def dump_config(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
