"""Training configs: YAML files merged over defaults, with ``key.sub=value`` command-line overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ..precision import AMP_CHOICES

DEFAULTS: dict[str, Any] = {
    "model": {"name": "fpliif", "args": {}},
    "data": {
        "root": None,
        "layout": "folder",
        "classes": None,  # folder layout only: label-set name or list; None = the dataset's default
        "train_split": "train",
        "val_split": "val",
        "size": 256,
        "augment": None,  # see fpliif.data.build_train_transform
        "workers": 2,
        "skip_bad": False,
        "preload": False,  # decode + resize every image once into memory (~12·size² bytes each); same samples
    },
    "train": {
        "epochs": 400,
        "batch_size": 33,
        "lr": 5.0e-4,
        "weight_decay": 0.0,
        "schedule": {"type": "multistep", "milestones": [200, 300, 350], "gamma": 0.1},
        "edge_lambda": 10.0,
        "edge_kernel": 3,
        "sample_queries": 4096,  # queries per image; null = the full output grid
        "amp": "auto",  # auto | none | bf16 | fp16: auto = bf16 where the device has it natively, else fp32
        "query_sampling": {"type": "uniform"},  # or {type: balanced, edge_boost: 2.0}: see docs/training.md
        "dice_weight": 0.0,  # > 0 adds dice_weight * soft Dice (not in the paper)
        "ema": None,  # EMA decay of the weights (e.g. 0.999): evaluated, checkpointed and saved as the weights
        "channels_last": False,
        "grad_clip": None,
        "class_weights": None,  # None | "inverse_sqrt_freq" (computed once from the training masks)
        "seed": 0,
        "val_every": 1,
        "val_batch_size": 8,
        "max_steps_per_epoch": None,  # for smoke runs
        "max_val_images": None,
        "device": "auto",  # auto | cpu | cuda
        "threads": None,  # torch CPU threads per process; None = torch's default
        "init_weights": None,  # a .safetensors file to start from (e.g. a shorter run's best weights)
    },
    "out": "runs/default",
}


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("args", "augment", "query_sampling"):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_override(cfg: dict[str, Any], text: str) -> None:
    """Apply one ``a.b.c=value`` override; ``value`` is parsed as YAML (numbers, lists, null...)."""
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected key=value (e.g. train.epochs=10)")
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    node = cfg
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            if p in node and node[p] is not None:
                raise ValueError(f"override {text!r}: {p!r} is not a section")
            node[p] = {}
        node = node[p]
    if parts[0] not in DEFAULTS:
        raise ValueError(f"override {text!r}: unknown section {parts[0]!r}; known: {sorted(DEFAULTS)}")
    if len(parts) == 2 and parts[0] in ("data", "train") and parts[1] not in DEFAULTS[parts[0]]:
        raise ValueError(
            f"override {text!r}: unknown key {parts[1]!r} in {parts[0]!r}; known: {sorted(DEFAULTS[parts[0]])}"
        )
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """DEFAULTS <- YAML file <- overrides, validated."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        unknown = set(loaded) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        for section in ("data", "train"):
            extra = set(loaded.get(section) or {}) - set(DEFAULTS[section])
            if extra:
                raise ValueError(f"{path}: unknown keys in {section!r}: {sorted(extra)}")
        cfg = deep_merge(cfg, loaded)
    for text in overrides:
        apply_override(cfg, text)
    validate(cfg)
    return cfg


def validate(cfg: dict[str, Any]) -> None:
    t, d = cfg["train"], cfg["data"]
    for key in ("lr", "weight_decay", "edge_lambda"):
        if isinstance(t[key], str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                t[key] = float(t[key])
            except ValueError:
                raise ValueError(f"train.{key}: expected a number, got {t[key]!r}") from None
    if d["root"] is None:
        raise ValueError("data.root: no dataset root given (set it in the config or pass data.root=PATH)")
    for key in ("epochs", "batch_size"):
        if not isinstance(t[key], int) or t[key] <= 0:
            raise ValueError(f"train.{key}: expected a positive integer, got {t[key]!r}")
    if not (isinstance(t["lr"], (int, float)) and t["lr"] > 0):
        raise ValueError(f"train.lr: expected a positive number, got {t['lr']!r}")
    if t["amp"] not in AMP_CHOICES:
        raise ValueError(f"train.amp: expected one of {', '.join(AMP_CHOICES)}, got {t['amp']!r}")
    _validate_query_sampling(t["query_sampling"])
    if (
        isinstance(t["dice_weight"], bool)
        or not isinstance(t["dice_weight"], (int, float))
        or not (0 <= t["dice_weight"] < float("inf"))
    ):
        raise ValueError(f"train.dice_weight: expected a number >= 0, got {t['dice_weight']!r}")
    if t["ema"] is not None and (
        isinstance(t["ema"], bool) or not isinstance(t["ema"], (int, float)) or not 0 < t["ema"] < 1
    ):
        raise ValueError(f"train.ema: expected null or a decay in (0, 1), e.g. 0.999; got {t['ema']!r}")
    if not isinstance(d["preload"], bool):
        raise ValueError(f"data.preload: expected true or false, got {d['preload']!r}")
    roots = d["root"] if isinstance(d["root"], list) else [d["root"]]
    if not roots or not all(isinstance(r, str) and r for r in roots):
        raise ValueError(f"data.root: expected a path or a non-empty list of paths, got {d['root']!r}")
    if t["sample_queries"] is not None and (not isinstance(t["sample_queries"], int) or t["sample_queries"] <= 0):
        raise ValueError(f"train.sample_queries: expected a positive integer or null, got {t['sample_queries']!r}")
    if t["schedule"].get("type") not in ("multistep", "constant"):
        raise ValueError(f"train.schedule.type: expected multistep or constant, got {t['schedule'].get('type')!r}")
    if t["class_weights"] not in (None, "inverse_sqrt_freq"):
        raise ValueError(f"train.class_weights: expected null or inverse_sqrt_freq, got {t['class_weights']!r}")
    if t["edge_kernel"] % 2 != 1 or t["edge_kernel"] < 3:
        raise ValueError(f"train.edge_kernel: expected an odd integer >= 3, got {t['edge_kernel']!r}")


def _validate_query_sampling(qs: Any) -> None:
    if not isinstance(qs, dict) or qs.get("type") not in ("uniform", "balanced"):
        raise ValueError(
            f"train.query_sampling: expected {{type: uniform}} or {{type: balanced, edge_boost: N}}, got {qs!r}"
        )
    allowed = {"type"} | ({"edge_boost"} if qs["type"] == "balanced" else set())
    extra = set(qs) - allowed
    if extra:
        raise ValueError(
            f"train.query_sampling: unknown keys {sorted(extra)} for type {qs['type']}; known: {sorted(allowed)}"
        )
    boost = qs.get("edge_boost", 0.0)
    if isinstance(boost, bool) or not isinstance(boost, (int, float)) or not 0 <= boost < float("inf"):
        raise ValueError(f"train.query_sampling.edge_boost: expected a number >= 0, got {boost!r}")


def dump_config(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
