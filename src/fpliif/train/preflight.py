"""The checks of a training run before its first step: what ``fpliif train --dry-run`` runs, and what a run runs first
(:class:`~fpliif.train.trainer.Trainer`), before anything slow (the init weights' tensors) or written (the run
directory). One function, :func:`check_run`, for both.

In order: the output directory (no other run or someone else's files there), each dataset root exists (a relative
one named as resolved against the current directory), the layout, the model's classes against the dataset's (by name
and in order), ``train.init_weights`` (a bundled name or a file; from its header alone: its tensors must fill at
least half of the model, e.g. the same width), the datasets' file lists (bad pairs, empty splits) and the batch size
against the training images. The model is built on the meta device (no memory) for these checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..labels import LabelSet

if TYPE_CHECKING:
    from .warmstart import WarmStart

BEFORE_FIRST_CHECKPOINT = ("config.yaml", "tb")
"""What a run writes into its directory before its first checkpoint: a directory holding only these may be started
again; any other file there without a ``last.pt`` is someone else's and is never overwritten."""


@dataclass
class Checked:
    """What :func:`check_run` found: the datasets (without transforms), whether the run resumes, and what
    ``train.init_weights`` will fill (None without it)."""

    train_set: Any
    val_set: Any | None
    resuming: bool
    warm_start: WarmStart | None = None


def _run_leftover(name: str) -> bool:
    """Whether a file name in a run directory without ``last.pt`` is what an earlier start of the run left there."""
    return name in BEFORE_FIRST_CHECKPOINT or (name.startswith("last.pt.") and name.endswith(".tmp"))


def check_out_dir(out: Path, resume: bool) -> bool:
    """ValueError unless ``out`` may hold this run (nothing is created); returns whether it resumes one."""
    exists = (out / "last.pt").exists()
    if exists and not resume:
        raise ValueError(
            f"output directory {out} already holds a run (last.pt); pass --resume to continue "
            f"it or choose another out=DIR (nothing was overwritten)"
        )
    others = sorted(p.name for p in out.iterdir() if not _run_leftover(p.name)) if not exists and out.is_dir() else []
    if others:
        raise ValueError(
            f"output directory {out} holds files but no run (no last.pt): {', '.join(others[:5])}"
            f"{' ...' if len(others) > 5 else ''}; choose another out=DIR or empty it (nothing was overwritten)"
        )
    return exists and resume


def _check_classes(model_set: LabelSet, data_set: LabelSet, root: Any) -> None:
    """ValueError unless the model has the dataset's classes in the same order (the index is what the head learns)."""
    if tuple(data_set.classes) != tuple(model_set.classes):
        raise ValueError(
            f"model.args.classes: the model has {model_set.num_classes} classes ({', '.join(model_set.classes)}) "
            f"but dataset {root} has {data_set.num_classes} ({', '.join(data_set.classes)}); give the model the "
            "dataset's classes in the same order (e.g. the list in its classes.txt)"
        )


def _check_init_weights(model: Any, weights: str) -> WarmStart:
    """``train.init_weights``: exists (a bundled name or a file) and fits ``model`` (from the header alone)."""
    from .warmstart import check_init_weights

    try:
        return check_init_weights(model, weights)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"train.init_weights: {e}") from None


def _dataset(d: dict[str, Any], layout: str, key: str, classes: dict[str, Any]) -> Any:
    """The dataset (no transform) of the split that ``data.<key>`` names; a split folder the root lacks is a
    FileNotFoundError naming the key and the splits there are."""
    from .. import data as fdata
    from ..data.layouts import SplitMissing

    try:
        return fdata.FaceParsingDataset(d["root"], layout, d[key], skip_bad=d["skip_bad"], cache=d["cache"], **classes)
    except SplitMissing as e:
        other = "null (no validation) or " if key == "val_split" else ""
        raise FileNotFoundError(f"data.{key}: {e}; set data.{key}={other}one of {', '.join(e.present)}") from None


def check_run(cfg: dict[str, Any], resume: bool = False, world: int = 1) -> Checked:
    """Every check of a run before its first step (see the module docstring); raises ValueError /
    FileNotFoundError naming the setting and writes nothing. ``world``: the number of training processes."""
    import torch

    from .. import data as fdata
    from ..data.dataset import dataset_roots
    from ..data.layouts import check_cache_option, check_root
    from ..models import make as make_model

    d, t = cfg["data"], cfg["train"]
    resuming = check_out_dir(Path(cfg["out"]), resume)
    for root in dataset_roots(d["root"]):
        check_root(root)
    layout = fdata.resolve_layout(d["root"], d["layout"])
    check_cache_option(d["cache"], layout, "data.cache")
    with torch.device("meta"):
        model = make_model(cfg["model"])
    classes = {"classes": d["classes"]} if d.get("classes") is not None else {}
    _check_classes(model.label_set, fdata.label_set_for(layout, dataset_roots(d["root"])[0], **classes), d["root"])
    warm_start = None
    if t["init_weights"] and not resuming:  # a resumed run does not read them again
        warm_start = _check_init_weights(model, t["init_weights"])
    train_set = _dataset(d, layout, "train_split", classes)
    val_set = _dataset(d, layout, "val_split", classes) if d["val_split"] else None
    if len(train_set) < t["batch_size"] * world:
        raise ValueError(
            f"train.batch_size: {t['batch_size']} x {world} processes exceeds the {len(train_set)} training images"
        )
    return Checked(train_set, val_set, resuming, warm_start)
