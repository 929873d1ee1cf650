"""Where the files of each dataset layout live, and which samples belong to which split.

Layouts, read as published (no preprocessing the user has to discover):

``celebamask-hq``
    The official archive: ``CelebA-HQ-img/<id>.jpg`` (1024²),
    ``CelebAMask-HQ-mask-anno/<k>/<id:05d>_<part>.png`` (512², one binary PNG per part, ``k = id // 2000``)
    and ``CelebA-HQ-to-CelebA-mapping.txt``. A missing part PNG means the part is absent. Parts are merged by
    ``fpliif data prepare`` (see :mod:`.celebamask`). Split: :func:`celebamask_split_of` follows the official
    ``g_partition.py``: with ``orig_idx`` the **0-based** second column of the mapping file, an image is
    ``train`` if ``orig_idx < 162771``, ``val`` if ``orig_idx < 182638``, else ``test``. This yields the
    paper's 24,183 / 2,993 / 2,824 images.

    Note on the off-by-one: CelebA's own ``list_eval_partition.txt`` is keyed by 1-based file names
    (``000001.jpg`` ...); its validation set starts at file ``162771.jpg``, which is ``orig_idx`` 162770. The
    script's rule compares the 0-based index with the 1-based boundary, so ``orig_idx`` 162770 (file
    162771.jpg, CelebA val) lands in *train* (likewise 182637 = file 182638.jpg, CelebA test, lands in
    *val*). We follow the script, not CelebA's partition file, because the script is what produces the
    published counts that every paper, including FP-LIIF, reports.
``lapa``
    ``{train,val,test}/images/<name>.jpg`` + ``labels/<name>.png`` (``landmarks/`` is not used), 11 classes.
``helen``
    The HELEN* release: ``{train,test}/<name>_image.jpg`` + ``<name>_label.png``, 11 classes; its
    ``<name>_viz.jpg`` (label overlays) are known files of the release and ignored without a word. That release
    has no validation folder; ``split="val"`` works only where a ``val/`` folder exists. Helen saved in LaPa's
    layout (``{train,test}/images/`` + ``labels/``) is read too with ``layout="helen"`` (``auto`` cannot tell it
    from LaPa and says ``lapa``: the same classes, without Helen's merged scores). The SmithCVPR2013 release
    (``images/`` + ``labels/<name>/<name>_lbl00.png`` ..., one soft PNG per class) is not read: a root in that
    form is named as such (:func:`misplaced_hint`).
``folder``
    ``images/<name>.<jpg|jpeg|png|bmp|webp>`` + ``masks/<name>.png`` (index PNG), e.g. celebamask-mini. Only the
    files directly in the two folders are read, as in the other layouts' folders: subfolders and files of other
    types are passed over, which :class:`Scan` records (``fpliif data check`` lists them, a dataset logs a
    warning). Classes: ``classes.txt`` in the root (:func:`read_classes_txt`: one class name per line, line order
    = index; class 0 is the background), else the ``classes`` argument (a label-set name or a list of names), else
    CelebAMask-HQ's 19 classes. Split: ``val`` if
    ``int(sha1(stem)[:8], 16) % 100 < val_percent`` (default 10), else ``train``; ``all`` = every pair. The
    rule depends only on the file's own stem, so adding or removing files never moves another file between
    splits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from ..labels import CELEBAMASK_HQ, HELEN, LABEL_SETS, LAPA, LabelSet, get_label_set, resolve_label_set

log = logging.getLogger("fpliif.data")

LAYOUTS: tuple[str, ...] = ("celebamask-hq", "lapa", "helen", "folder")
SPLITS: dict[str, tuple[str, ...]] = {
    "celebamask-hq": ("train", "val", "test", "all"),
    "lapa": ("train", "val", "test", "all"),
    "helen": ("train", "val", "test", "all"),
    "folder": ("train", "val", "all"),
}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
HELEN_VIZ_SUFFIX = "_viz"  # the HELEN* release's label overlays, <name>_viz.jpg: known, not read, not reported
DEFAULT_VAL_PERCENT = 10

CELEBA_IMG_DIR = "CelebA-HQ-img"
CELEBA_ANNO_DIR = "CelebAMask-HQ-mask-anno"
CELEBA_MAPPING = "CelebA-HQ-to-CelebA-mapping.txt"
CELEBA_TRAIN_END = 162771  # orig_idx < this: train (0-based orig_idx vs CelebA's 1-based val start, see above)
CELEBA_VAL_END = 182638  # orig_idx < this: val; else test


@dataclass(frozen=True)
class Sample:
    """One image and its labels: an index mask (``mask_path``) or CelebAMask-HQ part PNGs (``parts``)."""

    name: str
    image_path: Path
    mask_path: Path | None = None
    parts: tuple[tuple[int, Path], ...] = ()  # (class index, part PNG), in class order
    split: str = ""


@dataclass
class Scan:
    """Result of scanning a layout: the good samples, the bad ones as ``(path, reason)``, and what the layout
    does not read (``passed_over``: subfolders, ``NAME/``, and files of other types in its image and mask folders;
    hidden files and the HELEN* release's ``<name>_viz.jpg`` aside), which :func:`passed_over_text` puts in words."""

    samples: list[Sample] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    passed_over: list[str] = field(default_factory=list)


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")
    return layout


def check_split(layout: str, split: str) -> str:
    if split not in SPLITS[check_layout(layout)]:
        raise ValueError(f"layout {layout!r} has no split {split!r}; splits: {', '.join(SPLITS[layout])}")
    return split


class SplitMissing(FileNotFoundError):
    """A split's folder is missing from a root that has other split folders (``present``, in :data:`SPLITS`
    order), so the caller can name the setting that chose the split."""

    def __init__(self, message: str, root: Path, split: str, present: list[str]) -> None:
        super().__init__(message)
        self.root, self.split, self.present = root, split, present


def check_root(root: str | Path) -> Path:
    """``root`` as a Path, FileNotFoundError unless it is a folder (naming it as given and, if relative, as
    resolved against the current directory)."""
    root = Path(root).expanduser()
    where = f"{root}" if root.is_absolute() else f"{root} (resolved against the current directory: {root.absolute()})"
    if not root.exists():
        raise FileNotFoundError(f"dataset root {where} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {where} is not a directory")
    return root


def _listing(root: Path) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    except OSError:
        return "(unreadable)"
    if not names:
        return "(empty)"
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


def _need_dir(path: Path, root: Path, layout: str, expected: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(
            f"{root} does not look like a {layout} dataset root: {path} is missing "
            f"(expected {expected}); the root contains: {_listing(root)}{misplaced_hint(root)}"
        )
    return path


def split_folders(root: Path, layout: str) -> list[str]:
    """The splits of ``layout`` (in :data:`SPLITS` order, without ``all``) that have a folder in ``root``."""
    return [s for s in SPLITS[layout] if s != "all" and (root / s).is_dir()]


def _smith_release(root: Path) -> bool:
    """Whether ``root`` is Helen's SmithCVPR2013 release: ``images/`` + ``labels/<name>/<name>_lbl00.png`` ..."""
    labels = root / "labels"
    if not (labels.is_dir() and (root / "images").is_dir()):
        return False
    with os.scandir(labels) as it:
        first = next((Path(e.path) for e in it if e.is_dir()), None)
    return first is not None and any(first.glob("*_lbl[0-9][0-9].png"))


def _guess_layout(root: Path) -> str | None:
    """The layout the folders of ``root`` show, or None (:func:`detect_layout`'s rule, without errors)."""
    if (root / CELEBA_IMG_DIR).is_dir():
        return "celebamask-hq"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folder"
    for s in ("train", "test", "val"):
        d = root / s
        if (d / "images").is_dir() and (d / "labels").is_dir():
            return "lapa"
        if d.is_dir() and any(d.glob("*_image.*")):
            return "helen"
    return None


def misplaced_hint(root: Path, shown: int = 5) -> str:
    """``"; it looks like ..."`` when ``root`` is no dataset root but Helen's unsupported SmithCVPR2013 release, a
    folder inside a dataset root (a split folder, ``images/``, ...) or a parent folder of dataset roots; else ``""``.
    Only for error messages (a few folder look-ups)."""
    try:
        if _smith_release(root):
            return (
                "; it looks like the SmithCVPR2013 release of Helen (images/ + labels/<name>/<name>_lbl00.png ..., "
                "one soft PNG per class), which fpliif does not read: use the HELEN* release "
                "({train,test}/<name>_image.jpg + <name>_label.png; layout helen)"
            )
        parent = root.absolute().parent if root.parent == Path(".") else root.parent
        outer = _guess_layout(parent) if root.name else None
        if outer is not None:
            what = f"the {root.name!r} split folder" if root.name in SPLITS[outer] else f"the {root.name}/ folder"
            return f"; it looks like {what} of a {outer} root: pass its parent, {parent}"
        with os.scandir(root) as it:
            subs = sorted(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))
        inner = [(p, layout) for p in subs if (layout := _guess_layout(p)) is not None]
    except OSError:
        return ""
    if not inner:
        return ""
    more = ", ..." if len(inner) > shown else ""
    named = ", ".join(f"{p} ({layout})" for p, layout in inner[:shown])
    return f"; it looks like a parent folder of dataset roots: {named}{more}; pass one of them"


def _files(folder: Path, scan: Scan | None = None) -> list[Path]:
    """The files of ``folder`` (not hidden), sorted; its subfolders, which are not read, go to ``scan.passed_over``."""
    with os.scandir(folder) as it:
        entries = [e for e in it if not e.name.startswith(".")]
    if scan is not None:
        scan.passed_over += sorted(f"{e.path}/" for e in entries if e.is_dir())
    return sorted(Path(e.path) for e in entries if e.is_file())


def passed_over_text(paths: list[str], shown: int = 3) -> str:
    """``N not read (subfolders are not read; images: .jpg, ...; masks: .png): a, b, c, ...``, or ``""``."""
    if not paths:
        return ""
    more = ", ..." if len(paths) > shown else ""
    return (
        f"{len(paths)} not read (the layout reads no subfolders, images {'/'.join(IMAGE_EXTS)} and masks .png "
        f"only): {', '.join(paths[:shown])}{more}"
    )


def report_passed_over(paths: list[str], what: str) -> None:
    """Log a warning when a dataset passes over files or folders (:func:`passed_over_text`)."""
    if paths:
        log.warning("%s: %s; `fpliif data check` lists them", what, passed_over_text(paths))


def _pair_by_stem(
    images: list[Path],
    masks: list[Path],
    split: str,
    scan: Scan,
    mask_dir: Path,
    image_suffix: str = "",
    mask_suffix: str = "",
) -> None:
    """Pair images and masks by stem (after removing the given name suffixes); unpaired files are bad, files that
    are neither an image nor a mask go to ``scan.passed_over``."""
    by_stem: dict[str, list[Path]] = {}
    for p in images:
        stem = _stem(p, IMAGE_EXTS, image_suffix)
        if stem is not None:
            by_stem.setdefault(stem, []).append(p)
    mask_by_stem: dict[str, Path] = {}
    for p in masks:
        stem = _stem(p, (".png",), mask_suffix)
        if stem is not None:
            mask_by_stem[stem] = p
    used = {p for ps in by_stem.values() for p in ps} | set(mask_by_stem.values())
    scan.passed_over += [str(p) for p in dict.fromkeys([*images, *masks]) if p not in used]
    for stem in sorted(by_stem):
        imgs = by_stem[stem]
        if len(imgs) > 1:
            scan.bad.append(
                (str(imgs[0]), f"several images share the name {stem!r}: {', '.join(p.name for p in imgs)}")
            )
            continue
        mask = mask_by_stem.get(stem)
        if mask is None:
            expected = mask_dir / f"{stem}{mask_suffix}.png"
            scan.bad.append((str(imgs[0]), f"no mask for this image (expected {expected})"))
            continue
        scan.samples.append(Sample(name=stem, image_path=imgs[0], mask_path=mask, split=split))
    for stem in sorted(set(mask_by_stem) - set(by_stem)):
        scan.bad.append((str(mask_by_stem[stem]), "mask without an image"))


def _stem(path: Path, exts: tuple[str, ...], suffix: str) -> str | None:
    """The pairing stem of a file with one of ``exts`` whose stem ends with ``suffix`` (removed), else None."""
    if path.suffix.lower() not in exts or not path.stem.endswith(suffix):
        return None
    return path.stem[: len(path.stem) - len(suffix)]


def folder_split_of(stem: str, val_percent: float = DEFAULT_VAL_PERCENT) -> str:
    """``val`` or ``train`` for a file stem of the ``folder`` layout, from its SHA-1 alone (stable)."""
    bucket = int(hashlib.sha1(stem.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "val" if bucket < val_percent else "train"


def _scan_folder(root: Path, split: str, val_percent: float) -> Scan:
    exp = "images/<name>.jpg|png + masks/<name>.png"
    img_dir = _need_dir(root / "images", root, "folder", exp)
    mask_dir = _need_dir(root / "masks", root, "folder", exp)
    scan = Scan()
    images = _files(img_dir, scan)
    if not any(p.suffix.lower() in IMAGE_EXTS for p in images):
        skipped = f"; {passed_over_text(scan.passed_over)}" if scan.passed_over else ""
        raise DataError(f"no images ({'/'.join(IMAGE_EXTS)}) found in {img_dir}{skipped}", img_dir)
    _pair_by_stem(images, _files(mask_dir, scan), split, scan, mask_dir)
    if split != "all":
        keep = [s for s in scan.samples if folder_split_of(s.name, val_percent) == split]
        scan.samples = [Sample(s.name, s.image_path, s.mask_path, split=split) for s in keep]
    else:
        scan.samples = [
            Sample(s.name, s.image_path, s.mask_path, split=folder_split_of(s.name, val_percent)) for s in scan.samples
        ]
    return scan


def _split_dirs(root: Path, layout: str, split: str, expected: str) -> list[tuple[str, Path]]:
    present = split_folders(root, layout)
    if split != "all":
        if split not in present and present:  # SplitMissing; with no split folder at all: not a root (below)
            if layout == "helen" and split == "val":
                raise SplitMissing(
                    f"{root}: the Helen release has no validation split (no {root / 'val'} folder); "
                    "use split 'train' or 'test', or create a val/ folder in the same layout",
                    root,
                    split,
                    present,
                )
            raise SplitMissing(
                f"{root} has no {split!r} split: {root / split} is missing (its splits: {', '.join(present)})",
                root,
                split,
                present,
            )
        return [(split, _need_dir(root / split, root, layout, expected))]
    if not present:
        raise FileNotFoundError(
            f"{root} does not look like a {layout} dataset root: none of "
            f"{', '.join(s for s in SPLITS[layout] if s != 'all')} exists (expected {expected}); "
            f"the root contains: {_listing(root)}{misplaced_hint(root)}"
        )
    return [(s, root / s) for s in present]


def _scan_images_labels(d: Path, root: Path, layout: str, expected: str, split: str, scan: Scan) -> None:
    """Pair ``d/images/<name>.*`` with ``d/labels/<name>.png`` (LaPa's split folders) into ``scan``."""
    img_dir = _need_dir(d / "images", root, layout, expected)
    lab_dir = _need_dir(d / "labels", root, layout, expected)
    images = _files(img_dir, scan)
    if not any(p.suffix.lower() in IMAGE_EXTS for p in images):
        raise DataError(f"no images found in {img_dir}", img_dir)
    _pair_by_stem(images, _files(lab_dir, scan), split, scan, lab_dir)


def _scan_lapa(root: Path, split: str) -> Scan:
    exp = "{train,val,test}/{images/*.jpg, labels/*.png}"
    scan = Scan()
    for name, d in _split_dirs(root, "lapa", split, exp):
        _scan_images_labels(d, root, "lapa", exp, name, scan)
    return scan


def _scan_helen(root: Path, split: str) -> Scan:
    exp = "{train,test}/<name>_image.jpg + <name>_label.png, or {train,test}/{images/*.jpg, labels/*.png}"
    scan = Scan()
    for name, d in _split_dirs(root, "helen", split, exp):
        if (d / "images").is_dir() and (d / "labels").is_dir():  # Helen saved in LaPa's layout
            _scan_images_labels(d, root, "helen", exp, name, scan)
            continue
        files = [p for p in _files(d, scan) if not _helen_viz(p)]
        images = [p for p in files if p.stem.endswith("_image") and p.suffix.lower() in IMAGE_EXTS]
        if not images:
            raise DataError(f"no <name>_image.jpg files (nor images/ and labels/ folders) found in {d}", d)
        _pair_by_stem(images, files, name, scan, d, image_suffix="_image", mask_suffix="_label")
    return scan


def _helen_viz(path: Path) -> bool:
    """Whether ``path`` is one of the HELEN* release's label overlays (``<name>_viz.jpg``)."""
    return path.stem.endswith(HELEN_VIZ_SUFFIX) and path.suffix.lower() in IMAGE_EXTS


_PART_RE = re.compile(r"^(\d+)_([a-z_]+)\.png$")


def read_celeba_mapping(root: Path) -> dict[int, int]:
    """``idx -> orig_idx`` from ``CelebA-HQ-to-CelebA-mapping.txt`` (a header line, then rows)."""
    path = root / CELEBA_MAPPING
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the CelebAMask-HQ train/val/test split is derived from it "
            "(use split 'all' to read every image without a split)"
        )
    mapping: dict[int, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields or (lineno == 1 and not fields[0].isdigit()):
                continue
            try:
                mapping[int(fields[0])] = int(fields[1])
            except (ValueError, IndexError):
                raise DataError(
                    f"{path}:{lineno}: expected 'idx orig_idx orig_file', got {line.strip()!r}", path
                ) from None
    if not mapping:
        raise DataError(f"{path}: no rows", path)
    return mapping


def celebamask_split_of(orig_idx: int) -> str:
    """CelebAMask-HQ split of an image from its 0-based CelebA index (``orig_idx``), as ``g_partition.py``."""
    if orig_idx < CELEBA_TRAIN_END:
        return "train"
    if orig_idx < CELEBA_VAL_END:
        return "val"
    return "test"


def _scan_celebamask(root: Path, split: str) -> Scan:
    exp = f"{CELEBA_IMG_DIR}/<id>.jpg + {CELEBA_ANNO_DIR}/<k>/<id:05d>_<part>.png"
    img_dir = _need_dir(root / CELEBA_IMG_DIR, root, "celebamask-hq", exp)
    anno_dir = _need_dir(root / CELEBA_ANNO_DIR, root, "celebamask-hq", exp)
    class_of = {c: i for i, c in enumerate(CELEBAMASK_HQ.classes) if i > 0}
    images: dict[int, Path] = {}
    for p in _files(img_dir):
        if p.suffix.lower() in IMAGE_EXTS and p.stem.isdigit():
            images[int(p.stem)] = p
    if not images:
        raise DataError(f"no <id>.jpg images found in {img_dir}", img_dir)
    parts: dict[int, list[tuple[int, Path]]] = {}
    with os.scandir(anno_dir) as it:
        sub_dirs = sorted(Path(e.path) for e in it if e.is_dir())
    for d in sub_dirs:
        with os.scandir(d) as it:
            for e in it:
                m = _PART_RE.match(e.name)
                if m and m.group(2) in class_of:
                    parts.setdefault(int(m.group(1)), []).append((class_of[m.group(2)], Path(e.path)))
    if split != "all":
        mapping: dict[int, int] | None = read_celeba_mapping(root)
    else:  # no split needed: the mapping only labels each sample's split, when present
        mapping = read_celeba_mapping(root) if (root / CELEBA_MAPPING).is_file() else None
    scan = Scan()
    for idx in sorted(images):
        if mapping is not None and idx in mapping:
            s = celebamask_split_of(mapping[idx])
            if split != "all" and s != split:
                continue
        elif split != "all":
            scan.bad.append((str(images[idx]), f"image id {idx} is not in {CELEBA_MAPPING}"))
            continue
        else:
            s = "all"
        p = parts.get(idx)
        if not p:
            scan.bad.append((str(images[idx]), f"no mask parts {CELEBA_ANNO_DIR}/{idx // 2000}/{idx:05d}_*.png"))
            continue
        scan.samples.append(Sample(str(idx), images[idx], None, tuple(sorted(p)), split=s))
    for idx in sorted(set(parts) - set(images)):
        if split == "all" or (mapping is not None and idx in mapping and celebamask_split_of(mapping[idx]) == split):
            scan.bad.append(
                (str(parts[idx][0][1]), f"mask parts for image id {idx} without {CELEBA_IMG_DIR}/{idx}.jpg")
            )
    return scan


def scan_layout(root: str | Path, layout: str, split: str, val_percent: float = DEFAULT_VAL_PERCENT) -> Scan:
    """Samples and bad files of one split (no decoding; only names and folder structure are checked)."""
    check_split(layout, split)
    root = check_root(root)
    if layout == "folder":
        scan = _scan_folder(root, split, val_percent)
    elif layout == "lapa":
        scan = _scan_lapa(root, split)
    elif layout == "helen":
        scan = _scan_helen(root, split)
    else:
        scan = _scan_celebamask(root, split)
    return scan


def report_bad(bad: list[tuple[str, str]], skip_bad: bool, what: str) -> None:
    """Raise for the first bad file (naming how many more there are), or log them all when skipping."""
    if not bad:
        return
    if not skip_bad:
        path, reason = bad[0]
        more = f" (and {len(bad) - 1} more bad files; `fpliif data check` lists them)" if len(bad) > 1 else ""
        skip = "fix or remove it (fpliif train can skip bad pairs: data.skip_bad=true; the API: skip_bad=True)"
        raise DataError(f"{path}: {reason}{more}; {skip}", path)
    for path, reason in bad:
        log.warning("skipping bad pair %s: %s", path, reason)
    log.warning("%s: skipped %d bad pair(s)", what, len(bad))


def list_samples(
    root: str | Path,
    layout: str,
    split: str,
    skip_bad: bool = False,
    val_percent: float = DEFAULT_VAL_PERCENT,
) -> list[Sample]:
    """The samples of one split of a dataset in ``layout`` (see the module docstring).

    Raises FileNotFoundError for a wrong root or missing folders, :class:`DataError` (a ValueError) for an
    empty folder or a bad pair (image without mask, mask without image, ...). With ``skip_bad`` bad pairs are
    dropped with a logged warning and a count instead. Images are not decoded here: decoding errors surface in
    :class:`~fpliif.data.FaceParsingDataset` or ``fpliif data check``.
    """
    scan = scan_layout(root, layout, split, val_percent)
    report_bad(scan.bad, skip_bad, f"{layout} {split} at {root}")
    report_passed_over(scan.passed_over, f"{layout} {split} at {root}")
    if not scan.samples:
        raise DataError(f"{root}: no usable samples in split {split!r} of layout {layout!r}", root)
    return scan.samples


def read_classes_txt(path: Path) -> list[str]:
    """Class names of a ``classes.txt`` (UTF-8, a byte-order mark allowed; one a line, in label order; ``#``
    comments; no empty line between names): 2 to 255 distinct names (DataError)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Windows Notepad's BOM is no part of the first name
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})", path) from None
    names, lines, blank = [], [], None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line and blank is not None:  # line order is the label index: an empty line would shift the rest
            raise DataError(f"{path}: line {blank} is empty; each line names the class of the next label", path)
        if line:
            names.append(line)
            lines.append(number)
        elif not raw.strip():
            blank = blank or (number if names else None)
    if len(names) < 2:
        raise DataError(f"{path}: {len(names)} class name(s); a label set needs 2 or more", path)
    _refuse_duplicates(names, lines, path)
    if len(names) > 255:
        raise DataError(f"{path}: {len(names)} classes; at most 255 are supported (255 = ignore)", path)
    return names


def _refuse_duplicates(names: list[str], lines: list[int], path: Path) -> None:
    """DataError naming each class name given more than once and its line numbers."""
    at: dict[str, list[int]] = {}
    for name, line in zip(names, lines, strict=True):
        at.setdefault(name, []).append(line)
    twice = [f"{name!r} on lines {', '.join(map(str, n))}" for name, n in at.items() if len(n) > 1]
    if twice:
        raise DataError(f"{path}: duplicate class names: {'; '.join(twice)}; each class is named once", path)


def label_set_for(
    layout: str, root: str | Path | None = None, classes: str | list[str] | tuple[str, ...] | None = None
) -> LabelSet:
    """The label set of a layout. ``folder``: ``classes`` (label-set name or list of class names), else
    ``ROOT/classes.txt``, else CelebAMask-HQ."""
    check_layout(layout)
    if layout == "celebamask-hq":
        return CELEBAMASK_HQ
    if layout == "lapa":
        return LAPA
    if layout == "helen":
        return HELEN
    if classes is not None:
        if isinstance(classes, str):
            if classes in LABEL_SETS:
                return get_label_set(classes)
            if "," in classes:
                return resolve_label_set([c.strip() for c in classes.split(",") if c.strip()])
            p = Path(classes)
            if p.is_file():
                return _classes_file_set(p)
            return get_label_set(classes)  # raises KeyError listing the known sets
        return resolve_label_set(classes)
    if root is not None and (Path(root) / "classes.txt").is_file():
        return _classes_file_set(Path(root) / "classes.txt")
    return CELEBAMASK_HQ


def _classes_file_set(path: Path) -> LabelSet:
    """The label set of a ``classes.txt``: a built-in set's classes give that set (the one its folder is named
    after first: LaPa and Helen share their classes); any other list is called ``custom``, as the custom classes
    of a weights file are (``fpliif info``, ``fpliif eval``'s JSON and ``fpliif data check`` say the same)."""
    names = read_classes_txt(path)
    named = LABEL_SETS.get(path.parent.name)
    return named if named is not None and named.classes == tuple(names) else resolve_label_set(names)


def check_classes_option(classes: object, layout: str) -> None:
    """``--classes`` is for the folder layout (the others have fixed classes): ValueError otherwise."""
    if classes and layout != "folder":
        raise ValueError(f"--classes applies to the folder layout only ({layout!r} has fixed classes)")


def check_cache_option(cache: object, layout: str, name: str = "--cache") -> None:
    """A merged-mask cache (``--cache`` / ``data.cache``) is for celebamask-hq: ValueError naming ``name`` otherwise."""
    if cache and layout != "celebamask-hq":
        raise ValueError(
            f"{name} applies to the celebamask-hq layout only ({layout!r} reads its mask files; nothing is cached)"
        )


def detect_layout(root: str | Path) -> str:
    """Guess the layout of a dataset root from its folders (for the CLI's ``--layout auto``)."""
    root = check_root(root)
    layout = _guess_layout(root)
    if layout is not None:
        return layout
    hint = misplaced_hint(root)
    if hint:  # --layout cannot help: another folder is meant, or a release that is not read
        raise FileNotFoundError(f"{root} is not a dataset root (contains: {_listing(root)}){hint}")
    raise FileNotFoundError(
        f"cannot tell the layout of {root} (contains: {_listing(root)}); pass --layout ({', '.join(LAYOUTS)})"
    )


def resolve_layout(roots: str | Path | list[str | Path], layout: str) -> str:
    """``layout``; for ``auto``, the layout :func:`detect_layout` finds in every one of ``roots`` (ValueError
    when they differ). What ``--layout auto`` and a config's ``data.layout: auto`` mean."""
    if layout != "auto":
        return check_layout(layout)
    found = {str(r): detect_layout(r) for r in (roots if isinstance(roots, (list, tuple)) else [roots])}
    if len(set(found.values())) > 1:
        raise ValueError(f"the roots have different layouts ({found}); pass --layout or check them one by one")
    return next(iter(found.values()))
