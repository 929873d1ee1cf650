"""``fpliif data check``: decode every pair once, count labels, list bad files and what the layout does not read.

Streams over the files with a DataLoader (worker processes decode; the main process only adds up 256-bin
histograms), so memory stays bounded for any dataset size.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import celebamask
from .dataset import _identity, dataset_roots, load_sample
from .io import DataError, error_parts
from .layouts import (
    CELEBA_MAPPING,
    DEFAULT_VAL_PERCENT,
    SPLITS,
    Sample,
    check_split,
    label_set_for,
    passed_over_text,
    scan_layout,
    split_folders,
)

PASSED_OVER_SHOWN = 10
"""How many of the files and folders a dataset passes over the text report names (the JSON lists them all)."""


class _CheckSet(Dataset):
    def __init__(self, samples: list[Sample], num_classes: int, allow_scale: bool, sha1: dict[str, str]) -> None:
        self.samples, self.num_classes, self.allow_scale, self.sha1 = samples, num_classes, allow_scale, sha1

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        try:
            _, mask = load_sample(
                s, self.num_classes, self.allow_scale, self.sha1.get(str(s.image_path)), decode_only=True
            )
        except DataError as e:
            return None, error_parts(e, s.image_path)
        return np.bincount(mask.ravel(), minlength=256).astype(np.int64), None


def default_splits(root: Path, layout: str) -> list[str]:
    """The splits ``fpliif data check`` checks in ``root`` when none are given: all that the root has."""
    if layout == "folder":
        return ["train", "val"]
    if layout == "celebamask-hq":
        return ["train", "val", "test"] if (root / CELEBA_MAPPING).is_file() else ["all"]
    return split_folders(root, layout) or ["all"]  # "all" raises the clear "not a <layout> root" error


@dataclasses.dataclass
class _Gathered:
    """One root's split counts, samples to decode, listing problems, what it passes over, cached-mask sha1s and
    mask source."""

    counts: dict[str, int]
    todo: list[Sample]
    bad: list[tuple[str, str]]
    passed_over: list[str]
    sha1: dict[str, str]
    masks_from: str


def _gather(root: Path, layout: str, splits: list[str], cache: str | Path | None, val_percent: float) -> _Gathered:
    """What :func:`check_dataset` needs of one root (see :class:`_Gathered`)."""
    counts: dict[str, int] = {}
    bad: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    passed_over: dict[str, None] = {}
    samples: dict[str, Sample] = {}
    for split in splits:
        scan = scan_layout(root, layout, split, val_percent)
        counts[split] = len(scan.samples)
        bad += [b for b in scan.bad if b not in seen]
        seen.update(scan.bad)
        passed_over.update(dict.fromkeys(scan.passed_over))
        for s in scan.samples:
            samples.setdefault(str(s.image_path), s)
    todo = list(samples.values())
    sha1: dict[str, str] = {}
    masks_from = "mask files"
    if layout == "celebamask-hq":
        found, reasons = celebamask.find_cache(root, cache)
        if found is not None:
            masks_from = f"merged-mask cache {found.dir}"
            kept = []
            for s in todo:
                if s.name in found.bad:
                    bad.append((found.bad[s.name]["path"], found.bad[s.name]["reason"]))
                elif s.name in found.entries:
                    sha1[str(s.image_path)] = found.entries[s.name]["sha1"]
                    kept.append(dataclasses.replace(s, mask_path=found.mask_path(s.name)))
                else:
                    kept.append(s)  # not in the cache: merge its parts here
            todo = kept
        else:
            masks_from = "part PNGs merged on the fly (no valid cache: " + "; ".join(reasons) + ")"
    return _Gathered(counts, todo, bad, sorted(passed_over), sha1, masks_from)


def check_dataset(
    root: str | Path | Sequence[str | Path],
    layout: str,
    splits: list[str] | None = None,
    classes: str | list[str] | None = None,
    workers: int | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
    val_percent: float = DEFAULT_VAL_PERCENT,
) -> dict:
    """Check every pair of the given splits (default: each root's own, :func:`default_splits`); returns a JSON-able
    report.

    ``root``: one root or several of the same layout and classes, reported as one dataset (split counts per
    root under ``per_root``; ``splits`` adds them up)."""
    t0 = time.perf_counter()
    roots = dataset_roots(root)
    label_set = label_set_for(layout, roots[0], classes)
    for s in splits or ():
        check_split(layout, s)
    counts: dict[str, int] = {}
    per_root: list[dict] = []
    todo: list[Sample] = []
    bad: list[tuple[str, str]] = []
    passed_over: list[str] = []
    sha1: dict[str, str] = {}
    sources: list[str] = []
    for r in roots:
        if label_set_for(layout, r, classes).classes != label_set.classes:
            raise DataError(f"{r}: its classes differ from those of {roots[0]}", r)
        g = _gather(r, layout, splits or default_splits(r, layout), cache, val_percent)
        for k, v in g.counts.items():
            counts[k] = counts.get(k, 0) + v
        per_root.append({"root": str(r), "splits": g.counts, "samples": len(g.todo)})
        todo += g.todo
        bad += g.bad
        passed_over += g.passed_over
        sha1.update(g.sha1)
        sources.append(g.masks_from)
    counts = {s: counts[s] for s in SPLITS[layout] if s in counts}  # in the layout's order, whichever root had it
    masks_from = "; ".join(dict.fromkeys(sources))
    root = roots[0]
    hist = np.zeros(256, dtype=np.int64)
    present = np.zeros(256, dtype=np.int64)
    n_ok = 0
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    workers = max(0, min(workers, len(todo)))
    loader = DataLoader(
        _CheckSet(todo, label_set.num_classes, layout == "celebamask-hq", sha1),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=8 if workers else None,
    )
    for h, err in tqdm(
        loader,
        total=len(todo),
        desc=f"checking {root.name or root}" + (f" (+{len(roots) - 1} roots)" if len(roots) > 1 else ""),
        unit="img",
        disable=not progress,
        mininterval=0.5,
    ):
        if err is not None:
            bad.append(err)
            continue
        n_ok += 1
        hist += h
        present += h > 0
    labelled = int(hist[: label_set.num_classes].sum())
    total = int(hist.sum())
    per_class = [
        {
            "index": i,
            "name": name,
            "pixel_share": round(100.0 * int(hist[i]) / labelled, 4) if labelled else 0.0,
            "images": int(present[i]),
        }
        for i, name in enumerate(label_set.classes)
    ]
    return {
        "root": str(root) if len(roots) == 1 else [str(r) for r in roots],
        "per_root": per_root,
        "layout": layout,
        "label_set": label_set.name,
        "num_classes": label_set.num_classes,
        "splits": counts,
        "samples": len(todo),
        "checked_ok": n_ok,
        "masks_from": masks_from,
        "classes": per_class,
        "ignore_share": round(100.0 * int(hist[255]) / total, 4) if total else 0.0,
        "bad": [{"path": p, "reason": r} for p, r in bad],
        "passed_over": passed_over,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def format_report(report: dict) -> str:
    roots = report["root"] if isinstance(report["root"], list) else [report["root"]]
    lines = [
        f"root     {r}   " + "   ".join(f"{k} {v}" for k, v in pr["splits"].items())
        for r, pr in zip(roots, report["per_root"], strict=True)
    ]
    lines += [
        f"layout   {report['layout']}  (label set {report['label_set']}, {report['num_classes']} classes)",
        "splits   "
        + "   ".join(f"{k} {v}" for k, v in report["splits"].items())
        + f"   ({report['samples']} distinct samples)",
        f"masks    {report['masks_from']}",
        f"checked  {report['checked_ok']} good, {len(report['bad'])} bad in {report['seconds']} s"
        + (f"; {len(report['passed_over'])} passed over (below)" if report["passed_over"] else ""),
        "",
        f"{'class':>3} {'name':<12} {'pixels %':>9} {'images':>7}",
    ]
    for c in report["classes"]:
        lines.append(f"{c['index']:>3} {c['name']:<12} {c['pixel_share']:>9.3f} {c['images']:>7}")
    lines.append(f"    {'ignore(255)':<12} {report['ignore_share']:>9.3f}   (% of all pixels)")
    if report["bad"]:
        lines += ["", f"bad files ({len(report['bad'])}):"]
        lines += [f"  {b['path']}: {b['reason']}" for b in report["bad"]]
    if report["passed_over"]:
        lines += ["", f"passed over: {passed_over_text(report['passed_over'], shown=PASSED_OVER_SHOWN)}"]
    return "\n".join(lines)
