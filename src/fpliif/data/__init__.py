"""Face-parsing datasets (CelebAMask-HQ, LaPa, Helen, image/mask folders), augmentations and loaders.

Public API::

    LAYOUTS                                   # ("celebamask-hq", "lapa", "helen", "folder")
    list_samples(root, layout, split, skip_bad=False) -> list[Sample]
    label_set_for(layout, root=None) -> LabelSet
    FaceParsingDataset(root, layout, split, transform=None, skip_bad=False, ...)
    build_train_transform(size=256, augment=None, label_set=None)
    build_eval_transform(size=256, mask_sizes=(256,))
    make_loader(dataset, batch_size, shuffle, num_workers=None, seed=0, distributed=False, drop_last=False)
    DataError                                 # ValueError naming the bad file
    prepare_celebamask(root, cache=None, workers=None)   # what `fpliif data prepare` runs
    check_dataset(root, layout, ...)                     # what `fpliif data check` runs

See :mod:`.layouts` (file layouts and splits), :mod:`.celebamask` (the merged-mask cache), :mod:`.io` (decoding
rules for odd or bad files) and :mod:`.transforms` (augmentations).

Names load lazily (on first use), so ``fpliif.data.cli`` (argument parsing) imports neither torch nor kornia.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import DataError

# public name -> (submodule, name there)
_LAZY: dict[str, tuple[str, str]] = {
    "prepare_celebamask": ("celebamask", "prepare"),
    "check_dataset": ("check", "check_dataset"),
    "FaceParsingDataset": ("dataset", "FaceParsingDataset"),
    "make_loader": ("dataset", "make_loader"),
    **{
        name: ("layouts", name)
        for name in (
            "LAYOUTS",
            "SPLITS",
            "Sample",
            "celebamask_split_of",
            "detect_layout",
            "folder_split_of",
            "label_set_for",
            "list_samples",
            "resolve_layout",
        )
    },
    **{name: ("transforms", name) for name in ("PAPER_AUGMENT", "build_eval_transform", "build_train_transform")},
}

__all__ = [
    "LAYOUTS",
    "PAPER_AUGMENT",
    "SPLITS",
    "DataError",
    "FaceParsingDataset",
    "Sample",
    "build_eval_transform",
    "build_train_transform",
    "celebamask_split_of",
    "check_dataset",
    "detect_layout",
    "folder_split_of",
    "label_set_for",
    "list_samples",
    "make_loader",
    "prepare_celebamask",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
