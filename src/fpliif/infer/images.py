"""Image loading and conversion for parsing: any supported input -> RGB numpy array. No torch here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .. import limits
from ..imaging import check_float_range
from ..imaging import log as imaging_log

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
    ".gif",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def load_image(
    path: str | Path, max_pixels: int | None = None, check: Callable[[int, int], None] | None = None
) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array.

    EXIF orientation is applied; grayscale, palette, CMYK, RGBA (composited on white) and 16-bit images
    become 8-bit RGB. Raises FileNotFoundError / ValueError naming the file. ``max_pixels``: an image with
    more pixels is refused from its header, before decoding (:class:`fpliif.limits.TooManyPixels`, a
    ValueError); None: the default (:func:`fpliif.limits.default_max_pixels`), 0: no limit. ``check``: called
    with the header's (height, width) before decoding (as stored: an EXIF rotation may swap them), to refuse
    the file by raising a :class:`fpliif.limits.LimitError` (e.g. the work its size implies).
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    limit = limits.resolve_limit(max_pixels, "max_pixels", limits.default_max_pixels)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked next
            img = Image.open(path)
        with img:
            limits.check_pixels(*img.size, limit, str(path))  # header only: nothing decoded
            if check is not None:
                check(img.size[1], img.size[0])
            img.load()
            _note_frames(img, path)
            return pil_to_rgb(img, str(path))
    except limits.LimitError:
        raise
    except Image.DecompressionBombError as e:
        raise limits.TooManyPixels(
            f"{path}: too many pixels even for Pillow's decompression-bomb guard ({e})", "max_pixels", 0, 0
        ) from None
    except UnidentifiedImageError:
        raise ValueError(f"{path}: cannot read image (not a recognised image format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from None


def frames_note(img: Any) -> str | None:
    """What ``fpliif parse`` logs and the service's ``warnings`` say of an animated or multi-page image, e.g.
    ``3 frames (GIF); the first is parsed`` (None for one frame)."""
    frames = int(getattr(img, "n_frames", 1) or 1)
    return f"{frames} frames ({img.format or 'image'}); the first is parsed" if frames > 1 else None


def _note_frames(img: Any, path: Path) -> None:
    """Log that only the first frame of an animated or multi-page file is parsed."""
    note = frames_note(img)
    if note:
        imaging_log.warning("%s: %s (fpliif parse --video parses every frame)", path, note)


def pil_to_rgb(img: Any, name: str | None = None) -> np.ndarray:
    """PIL image (any mode) -> (H, W, 3) uint8 RGB by the one rule of :func:`fpliif.imaging.to_rgb`
    (EXIF orientation applied; transparency over white; 16-bit and float images scaled); ``name``: what its
    warnings call it."""
    from ..imaging import to_rgb

    return to_rgb(img, name=name)


def array_to_rgb(arr: np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W), (H, W, 1|3|4) numpy array -> (H, W, 3) RGB, uint8 or float32 in [0, 1].

    uint8 stays uint8; uint16 is scaled from 16 bits (as a 16-bit file is), other integer types must hold 8-bit
    values (0..255); floats must lie in [0, 1]. A fourth channel is alpha: composited over white, as for image
    files and PIL images (:func:`fpliif.imaging.to_rgb`).
    """
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name}: expected an (H, W, 3) RGB array (or (H, W) grayscale), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: empty image of shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    out = _unit_range(arr, name)
    if out.shape[2] == 4:
        from PIL import Image

        from ..imaging import to_rgb

        out = to_rgb(Image.fromarray(to_uint8(out), "RGBA"), exif=False)
    return np.ascontiguousarray(out)


def _unit_range(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` (any channels) as uint8, or float32 in [0, 1]; ValueError naming ``name`` for values out of its
    type's range."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return (arr.astype(np.float64) * (255.0 / 65535.0)).round().astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{name}: {arr.dtype} images must hold 8-bit values 0..255, got range [{lo}, {hi}] (16-bit data: "
                "pass it as uint16)"
            )
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        check_float_range(float(arr.min()), float(arr.max()), name)
        return np.clip(arr, 0, 1)
    raise ValueError(f"{name}: unsupported dtype {arr.dtype}")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """RGB array (uint8 or float in [0, 1]) -> uint8."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


class FolderImages(NamedTuple):
    """The image files under a folder (sorted by relative path), those left out because they lie under an excluded
    folder, links with an image name that lead nowhere, and how many other files were passed over (their
    extensions are not :data:`IMAGE_EXTENSIONS`)."""

    files: list[Path]
    excluded: list[Path]
    broken: list[Path]
    others: int = 0


def scan_image_folder(folder: str | Path, exclude: Iterable[Path] = ()) -> FolderImages:
    """The image files under ``folder`` (recursive), less those under ``exclude``; see :class:`FolderImages`."""
    folder = Path(folder)
    excluded_dirs = [Path(e).resolve() for e in exclude]
    files, excluded, broken = [], [], []
    others = 0
    for p in folder.rglob("*"):
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            others += p.is_file() and not p.name.startswith(".")  # hidden files (.DS_Store) are not counted
            continue
        if not p.is_file():
            if p.is_symlink() and not p.exists():
                broken.append(p)
            continue
        rp = p.resolve()
        (excluded if any(rp == e or e in rp.parents for e in excluded_dirs) else files).append(p)

    def order(p: Path) -> str:
        return p.relative_to(folder).as_posix()

    return FolderImages(sorted(files, key=order), sorted(excluded, key=order), sorted(broken, key=order), others)


def iter_image_files(folder: str | Path, exclude: Iterable[Path] = ()) -> Iterator[Path]:
    """Image files under ``folder`` (recursive, sorted by relative path), skipping those under ``exclude``."""
    yield from scan_image_folder(folder, exclude).files


def is_pil(x: Any) -> bool:
    """Whether ``x`` is a PIL image (without importing Pillow)."""
    return type(x).__module__.split(".")[0] == "PIL" and hasattr(x, "mode") and hasattr(x, "size")


def _one_image(x: Any, name: str, max_pixels: int | None = None) -> tuple[np.ndarray, str | None]:
    if isinstance(x, (str, Path)):
        return load_image(x, max_pixels=max_pixels or 0), str(x)
    if is_pil(x):
        source = getattr(x, "filename", None) or None
        limits.check_pixels(*x.size, max_pixels, source or name)  # before decoding a lazy image
        return pil_to_rgb(x, source or name), source
    if isinstance(x, np.ndarray):
        return array_to_rgb(x, name=name), None
    raise ValueError(
        f"{name}: unsupported input type {type(x).__name__} (expected a path, PIL image, "
        "numpy (H, W, 3) uint8 RGB array or torch tensor)"
    )


def as_images(images: Any, max_pixels: int | None = None) -> tuple[list[tuple[np.ndarray, str | None]], bool]:
    """Any supported input -> list of ((H, W, 3) RGB array, source), and whether it was a single image;
    TooManyPixels for an image over ``max_pixels`` (files: from the header, before decoding)."""
    items, single = _as_images_unchecked(images, max_pixels)
    for i, (img, source) in enumerate(items):
        limits.check_pixels(img.shape[1], img.shape[0], max_pixels, source or ("image" if single else f"image[{i}]"))
    return items, single


def _as_images_unchecked(images: Any, max_pixels: int | None) -> tuple[list[tuple[np.ndarray, str | None]], bool]:
    if is_torch_tensor(images):
        from .torch_backend import tensor_to_numpy_images

        arrays, batch = tensor_to_numpy_images(images)
        return [(array_to_rgb(a, name=f"image[{i}]"), None) for i, a in enumerate(arrays)], not batch
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [(array_to_rgb(a, name=f"image[{i}]"), None) for i, a in enumerate(images)], False
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images: empty list")
        out = []
        for i, x in enumerate(images):
            if is_torch_tensor(x):
                from .torch_backend import tensor_to_numpy_images

                arrays, batch = tensor_to_numpy_images(x)
                if batch:
                    raise ValueError(f"image[{i}]: expected a single (3, H, W) tensor in a list, got a batch")
                out.append((array_to_rgb(arrays[0], name=f"image[{i}]"), None))
            else:
                out.append(_one_image(x, f"image[{i}]", max_pixels))
        return out, False
    return [_one_image(images, "image", max_pixels)], True
