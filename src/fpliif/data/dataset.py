"""The torch Dataset over any layout, and the DataLoader factory."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import celebamask
from .io import DataError, error_parts, merge_parts, read_image, read_mask
from .layouts import (
    DEFAULT_VAL_PERCENT,
    Sample,
    check_split,
    label_set_for,
    report_bad,
    report_passed_over,
    scan_layout,
)

log = logging.getLogger("fpliif.data")


def load_sample(
    sample: Sample,
    num_classes: int,
    allow_image_scale: bool = False,
    mask_sha1: str | None = None,
    decode_only: bool = False,
) -> tuple[torch.Tensor | None, np.ndarray]:
    """Decode and validate one pair: ``(image (3,H,W) float32 in [0,1], mask (H,W) uint8)``.

    Raises :class:`DataError` naming the file for any problem (see :mod:`fpliif.data.io`). ``decode_only``:
    check the image decodes and fits the mask, but return None for it.
    """
    if sample.mask_path is not None:
        mask = read_mask(sample.mask_path, num_classes, expected_sha1=mask_sha1)
        mask_path: Path | str = sample.mask_path
    else:
        mask = merge_parts(sample.parts, sample.name)
        first = sample.parts[0][1]  # <id:05d>_<part>.png: the id as the files spell it
        mask_path = f"{first.parent}/{first.name.split('_', 1)[0]}_*.png"
    image = read_image(
        sample.image_path,
        expect_size=(mask.shape[1], mask.shape[0]),
        allow_scale=allow_image_scale,
        mask_path=mask_path,
        decode_only=decode_only,
    )
    return image, mask


def dataset_roots(root: str | Path | Sequence[str | Path]) -> list[Path]:
    """One dataset root or several, as a list of distinct paths (several roots are read as one dataset)."""
    roots = [root] if isinstance(root, (str, Path)) else list(root)
    if not roots:
        raise ValueError("dataset root: expected a path or a non-empty list of paths")
    out: list[Path] = []
    for r in roots:
        if not isinstance(r, (str, Path)) or str(r) == "":
            raise ValueError(f"dataset root: expected a path, got {r!r}")
        p = Path(r).expanduser()
        if p in out:
            raise ValueError(f"dataset root {p} is given twice")
        out.append(p)
    return out


class FaceParsingDataset(Dataset):
    """Face-parsing samples of one split of a dataset in any of :data:`~fpliif.data.LAYOUTS`.

    ``__getitem__`` returns ``{"image": float32 (3, H, W) in [0, 1], "mask": int64 (H, W) (255 = ignore),
    "name": str}`` passed through ``transform`` (e.g. :func:`~fpliif.data.build_train_transform`). Without a
    transform, images and masks keep their stored size, except CelebA-HQ images (1024²), which are
    downscaled to their masks' 512².

    Bad data: listing problems (image without mask, ...) raise at construction unless ``skip_bad``. Decoding
    problems (corrupt file, size mismatch, invalid labels, corrupted cache) are found when a sample is read
    and raise :class:`~fpliif.data.DataError` naming the file; with ``skip_bad`` the pair is skipped with a
    logged warning (counted in ``self.num_skipped``, per process) and the next good sample is returned
    instead, so training never sees a mis-aligned pair. Run ``fpliif data check`` to find all bad files up
    front. Subfolders and files of other types in the image and mask folders are not read (a logged warning
    counts them; ``fpliif data check`` lists them).

    CelebAMask-HQ needs the merged-mask cache of ``fpliif data prepare --data ROOT`` (``cache``: its folder if not in
    a default place). Without a valid cache the constructor raises FileNotFoundError saying to run it, unless
    ``auto_prepare=True`` (prepare now; not for several DDP ranks at once) or ``cache=False`` (merge the part
    PNGs on every read: correct but slow).

    ``root`` may be a list of roots of the same layout and classes: their samples are read as one dataset,
    each root split by its layout's own rule (the ``folder`` hash rule depends only on a file's stem, so a
    root's split is the same alone or beside others).

    ``classes``: label set name or class list for the ``folder`` layout (default ``ROOT/classes.txt``, else
    CelebAMask-HQ). ``val_percent``: the ``folder`` layout's hash split.
    """

    def __init__(
        self,
        root: str | Path | Sequence[str | Path],
        layout: str,
        split: str,
        transform: Callable[[dict], dict] | None = None,
        skip_bad: bool = False,
        classes: str | list[str] | None = None,
        cache: str | Path | bool | None = None,
        auto_prepare: bool = False,
        val_percent: float = DEFAULT_VAL_PERCENT,
    ) -> None:
        check_split(layout, split)
        self.roots = dataset_roots(root)
        self.root = self.roots[0]
        self.layout = layout
        self.split = split
        self.transform = transform
        self.skip_bad = skip_bad
        self.label_set = label_set_for(layout, self.root, classes)
        for other in self.roots[1:]:
            if label_set_for(layout, other, classes).classes != self.label_set.classes:
                raise DataError(
                    f"{other}: its classes differ from those of {self.root}; several roots must share one class list",
                    other,
                )
        self.num_skipped = 0
        self.skipped: list[tuple[str, str]] = []
        self._sha1: dict[str, str] = {}
        self.cache_dirs: dict[Path, Path] = {}  # root -> its merged-mask cache (celebamask-hq)
        samples: list[Sample] = []
        bad: list[tuple[str, str]] = []
        passed_over: list[str] = []
        for r in self.roots:
            scan = scan_layout(r, layout, split, val_percent)
            found = scan.samples
            bad.extend(scan.bad)
            passed_over.extend(scan.passed_over)
            if layout == "celebamask-hq" and cache is not False:
                found = self._use_cache(r, found, bad, None if cache in (None, True) else cache, auto_prepare)
            samples.extend(found)
        where = ", ".join(str(r) for r in self.roots)
        report_bad(bad, skip_bad, f"{layout} {split} at {where}")
        report_passed_over(passed_over, f"{layout} {split} at {where}")
        if not samples:
            raise DataError(f"{where}: no usable samples in split {split!r} of layout {layout!r}", self.root)
        self.samples = samples
        self._preloaded: list | None = None

    def _use_cache(
        self, root: Path, samples: list[Sample], bad: list[tuple[str, str]], cache, auto_prepare: bool
    ) -> list[Sample]:
        found, reasons = celebamask.find_cache(root, cache)
        if found is not None and any(s.name not in found.entries and s.name not in found.bad for s in samples):
            reasons.append(f"{found.dir}: the cache lacks some samples of {root} (images added since prepare?)")
            found = None
        if found is None and auto_prepare:
            log.warning("no valid CelebAMask-HQ mask cache (%s); preparing it now", "; ".join(reasons))
            celebamask.prepare(root, cache)
            found, reasons = celebamask.find_cache(root, cache)
        if found is None:
            raise FileNotFoundError(
                f"no valid CelebAMask-HQ merged-mask cache for {root} ({'; '.join(reasons)}). "
                + celebamask.prepare_hint(root, cache)
            )
        self.cache_dirs[root] = found.dir
        out = []
        for s in samples:
            if s.name in found.bad:
                bad.append((found.bad[s.name]["path"], found.bad[s.name]["reason"]))
                continue
            entry = found.entries[s.name]
            self._sha1[str(s.image_path)] = entry["sha1"]
            out.append(dataclasses.replace(s, mask_path=found.mask_path(s.name)))
        return out

    @property
    def cache_dir(self) -> Path | None:
        """The merged-mask cache of the (first) root, for celebamask-hq; None otherwise."""
        return self.cache_dirs.get(self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> dict:
        """The untransformed sample ``index`` (raises :class:`DataError` for a bad pair); from memory after
        :meth:`preload`."""
        s = self.samples[index]
        if self._preloaded is not None:
            entry = self._preloaded[index]
            if isinstance(entry, DataError):
                raise entry
            return {"image": entry[0], "mask": entry[1].long(), "name": s.name}
        return self._decode(index)

    def preload(self, size: int, workers: int = 0, progress: bool = False) -> None:
        """Decode every sample once and keep it in memory at ``size``² (image bicubic antialiased, mask
        nearest: exactly the first step of the train and eval transforms, which then leave it unchanged, so
        transformed samples are bit-identical to those read from disk). Memory: ~12·size² bytes per sample;
        decoding runs in ``workers`` processes. Bad pairs are kept as their error and raised (or skipped with
        ``skip_bad``) when read, as without preloading."""
        self._preloaded = None
        loader = DataLoader(
            _Resized(self, size), batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity
        )
        entries: list = []
        for i, entry in enumerate(loader):
            if progress and i % 500 == 0:
                log.info("preloading %d/%d samples at %d²", i, len(self), size)
            entries.append(entry)
        self._preloaded = entries

    def _decode(self, index: int) -> dict:
        s = self.samples[index]
        image, mask = load_sample(
            s,
            self.label_set.num_classes,
            allow_image_scale=self.layout == "celebamask-hq",
            mask_sha1=self._sha1.get(str(s.image_path)),
        )
        return {"image": image, "mask": torch.from_numpy(mask.astype(np.int64)), "name": s.name}

    def __getitem__(self, index: int) -> dict:
        n = len(self.samples)
        for attempt in range(min(n, 50)):
            i = (index + attempt) % n
            try:
                sample = self.load(i)
            except DataError as e:
                if not self.skip_bad:
                    stale = [(r, c) for r, c in self.cache_dirs.items() if e.path and Path(e.path).is_relative_to(c)]
                    if stale:
                        root, cache = stale[0]
                        given = None if cache in celebamask.candidate_cache_dirs(root) else cache
                        raise DataError(
                            f"{e} (run `{celebamask.prepare_command(root, given)}` to rebuild the cache)", e.path
                        ) from None
                    raise
                self.num_skipped += 1
                self.skipped.append(error_parts(e))
                log.warning("skipping bad pair %s (%d skipped so far in this process)", e, self.num_skipped)
                continue
            return self.transform(sample) if self.transform is not None else sample
        raise DataError(
            f"{', '.join(map(str, self.roots))}: {min(n, 50)} bad samples in a row from index {index}; "
            "run `fpliif data check`"
        )


class _Resized(Dataset):
    """Sample ``i`` of a dataset decoded from disk and resized to ``size``² (image float32, mask uint8), or
    its :class:`DataError` (for :meth:`FaceParsingDataset.preload`)."""

    def __init__(self, dataset: FaceParsingDataset, size: int) -> None:
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        from .transforms import resize_image, resize_mask

        try:
            sample = self.dataset._decode(i)
        except DataError as e:
            return e
        image = resize_image(sample["image"], self.size).contiguous()
        return image, resize_mask(sample["mask"], self.size).to(torch.uint8).contiguous()


def _identity(x):
    return x


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed (set by the DataLoader)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int | None,
    shuffle: bool,
    num_workers: int | None = None,
    seed: int = 0,
    distributed: bool = False,
    drop_last: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
    epoch: int | None = None,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A reproducible DataLoader (the one loader factory of training, evaluation and the tools).

    * ``batch_size``: None yields the samples one at a time, not collated (e.g. images of different sizes).
    * ``num_workers``: default ``min(2, os.cpu_count())``.
    * Seeding: the loader gets a ``torch.Generator`` seeded with ``seed``; the DataLoader derives each
      worker's torch seed from it (``base_seed + worker_id``), and :func:`seed_worker` seeds numpy and
      ``random`` from that. The augmentations draw from the worker's torch RNG, so the same seed, batch size
      and worker count give the same batches. With ``num_workers=0`` the augmentations use the main
      process's RNG: call ``torch.manual_seed`` yourself.
    * ``epoch=None``: one loader for the whole run; workers are persistent (no re-fork per epoch) and keep
      their RNG streams across epochs, so epochs differ but the whole run repeats. ``epoch=N``: the loader of
      epoch N alone (the trainer's, which makes resuming exact): its generator is seeded with
      :func:`epoch_seed` ``(seed, N)``, a distributed sampler is set to epoch N, workers are not persistent.
    * ``distributed=True``: a ``DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)``
      (rank and world size from the process group unless ``num_replicas``/``rank`` are given). Without
      ``epoch`` the caller must call ``loader.sampler.set_epoch(epoch)`` at the start of every epoch, or
      every epoch repeats the same order.
    * ``pin_memory``: default: when CUDA is available.
    """
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    generator = torch.Generator()
    generator.manual_seed(seed if epoch is None else epoch_seed(seed, epoch))
    sampler = None
    if distributed:
        sampler = DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        if epoch is not None:
            sampler.set_epoch(epoch)
        shuffle = False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0 and epoch is None,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
    )


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s loader in a run seeded with ``seed`` (distinct for every pair in use)."""
    return seed * 100003 + epoch
