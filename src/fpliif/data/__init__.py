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

See :mod:`.layouts` (file layouts and splits), :mod:`.celebamask` (split rule, cache), :mod:`.io` (decoding
rules for odd or bad files) and :mod:`.transforms` (augmentations).
"""

from .celebamask import prepare as prepare_celebamask
from .celebamask import split_of as celebamask_split_of
from .check import check_dataset
from .dataset import FaceParsingDataset, make_loader
from .io import DataError
from .layouts import LAYOUTS, SPLITS, Sample, detect_layout, folder_split_of, label_set_for, list_samples
from .transforms import PAPER_AUGMENT, build_eval_transform, build_train_transform

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
