"""Decoding images and label masks, with one clear error per bad file.

Rules (each bad case raises :class:`DataError` naming the file and the problem; nothing is guessed silently):

Images (PIL decodes them; the result is a float32 ``(3, H, W)`` tensor in ``[0, 1]``, i.e. ``uint8 / 255``):

* 0-byte, truncated or corrupt files: :class:`DataError` (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set).
* Every mode becomes uint8 RGB by the one rule of :func:`fpliif.imaging.to_rgb`, shared with the parser and
  the service: grayscale, palette, CMYK, 16-bit (scaled by bit depth), float TIFFs (values in [0, 1]),
  transparency composited over white. A mode with no RGB conversion is a :class:`DataError`.
* EXIF orientation is applied to the *image* (never to the mask); the rotated image must then match the
  mask size, else a :class:`DataError` explains the orientation mismatch.

Masks (the pixel value is the class index; the result is a ``uint8`` ``(H, W)`` array):

* ``L``/``P``: the stored indices (for ``P`` the palette colours are ignored), ``1``: 0/1.
* 16-bit (``I;16*``/``I``): the stored values, which must still be class indices.
* ``RGB``/``RGBA``/``LA``: accepted only when all colour channels are equal (alpha is ignored); a colour-coded
  mask is rejected with a clear error (convert it to an index PNG first).
* Values must be ``< num_classes`` or :data:`~fpliif.labels.IGNORE_INDEX` (255).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..imaging import apply_orientation, exif_orientation, has_alpha, to_rgb
from ..labels import IGNORE_INDEX

_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)


def error_parts(e: Exception, default_path: str | Path = "") -> tuple[str, str]:
    """``(path, reason)`` of an error, with the path prefix removed from the message."""
    msg = str(e)
    path = getattr(e, "path", None) or str(default_path)
    if path and msg.startswith(f"{path}: "):
        msg = msg[len(path) + 2 :]
    return path, msg


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file does not exist", path) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} file: {e}", path) from None
    if not data:
        raise DataError(f"{path}: empty {what} file (0 bytes)", path)
    return data


def _open(data: bytes, path: Path, what: str, load: bool = True) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # PIL's message names its in-memory buffer, not the file
        raise DataError(
            f"{path}: cannot decode {what}: not a readable image (no image format recognised in its "
            f"{len(data):,} bytes: corrupt, or not an image file)",
            path,
        ) from None
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: cannot decode {what} (corrupt or truncated file?): {e}", path) from None
    if load:
        _load(img, path, what)
    return img


def _load(img: Image.Image, path: Path, what: str) -> None:
    try:
        img.load()
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: cannot decode {what} (corrupt or truncated file?): {e}", path) from None


def _to_rgb_array(img: Image.Image, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an oriented image (:func:`fpliif.imaging.to_rgb`), errors naming the file."""
    try:
        return to_rgb(img, exif=False, name=str(path))
    except ValueError as e:
        raise DataError(f"{path}: {e}", path) from None


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)


def read_image(
    path: str | Path,
    expect_size: tuple[int, int] | None = None,
    allow_scale: bool = False,
    mask_path: str | Path | None = None,
    decode_only: bool = False,
) -> torch.Tensor | None:
    """Decode an image to a float32 ``(3, H, W)`` tensor in [0, 1], EXIF orientation applied.

    ``expect_size=(w, h)``: the size of the mask the image belongs to; the image as displayed (after EXIF
    orientation) must have that size, else :class:`DataError`. With ``allow_scale`` (CelebA-HQ: 1024² images,
    512² masks) a larger image with the same aspect ratio is downscaled to ``expect_size`` instead (JPEG DCT
    scaling where possible, then bicubic with antialiasing). ``decode_only``: check that it decodes, return
    None.
    """
    path = Path(path)
    img = _open(_read_bytes(path, "image"), path, "image", load=False)
    orientation = exif_orientation(img)
    w, h = img.size
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    reduce = False
    if expect_size is not None and (w, h) != tuple(expect_size):
        mw, mh = expect_size
        if allow_scale and w >= mw and h >= mh and w * mh == h * mw:
            reduce = True
        else:
            msg = f"{path}: image is {w}x{h} but its mask {mask_path or ''} is {mw}x{mh}".replace("  ", " ")
            if orientation != 1:
                msg += (
                    f" (after applying the image's EXIF orientation {orientation}; the stored pixels are "
                    f"{img.size[0]}x{img.size[1]}. The mask must match the image as displayed, "
                    "i.e. EXIF-rotated)"
                )
            raise DataError(msg, path)
    if reduce and orientation == 1 and img.format == "JPEG":
        img.draft("RGB", tuple(expect_size))  # decode at 1/2, 1/4, ... scale: much faster for CelebA-HQ
    _load(img, path, "image")
    if orientation != 1:
        img = apply_orientation(img)
    if decode_only:
        return None
    if reduce and img.size != tuple(expect_size):
        if img.mode not in ("RGB", "L") or has_alpha(img):
            img = Image.fromarray(_to_rgb_array(img, path))
        img = img.resize(tuple(expect_size), Image.BICUBIC)
    return _to_tensor(_to_rgb_array(img, path))


def mask_array(img: Image.Image, path: Path) -> np.ndarray:
    """Class-index array of a decoded mask image (see module docstring for the accepted modes)."""
    mode = img.mode
    if mode in ("L", "P"):
        return np.asarray(img, dtype=np.uint8) if mode == "L" else np.asarray(img).astype(np.uint8, copy=False)
    if mode == "1":
        return np.asarray(img).astype(np.uint8)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.int64)
        return _check_u8(arr, path)
    if mode in ("RGB", "RGBA", "LA"):
        arr = np.asarray(img)
        colour = arr[..., :1] if mode == "LA" else arr[..., :3]
        if colour.shape[-1] == 3 and not (
            np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])
        ):
            raise DataError(
                f"{path}: mask is a colour ({mode}) image whose channels differ; masks must store the class "
                "index per pixel (8-bit grayscale or palette PNG), not a colour code",
                path,
            )
        return np.ascontiguousarray(colour[..., 0], dtype=np.uint8)
    raise DataError(f"{path}: unsupported mask mode {mode}; expected an 8-bit grayscale or palette PNG", path)


def _check_u8(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        bad = np.unique(arr[(arr < 0) | (arr > 255)])[:8].tolist()
        raise DataError(f"{path}: mask values {bad} are not class indices (0..254, 255 = ignore)", path)
    return arr.astype(np.uint8)


def check_labels(mask: np.ndarray, num_classes: int, path: str | Path) -> None:
    """Raise :class:`DataError` if the mask holds values other than ``0..num_classes-1`` and 255."""
    bad = (mask >= num_classes) & (mask != IGNORE_INDEX)
    if bad.any():
        values = np.unique(mask[bad])[:8].tolist()
        raise DataError(
            f"{path}: mask holds label values {values} outside the {num_classes} classes "
            f"(valid: 0..{num_classes - 1}, {IGNORE_INDEX} = ignore); "
            "wrong label set or a colour-coded mask?",
            path,
        )


def read_mask(path: str | Path, num_classes: int | None = None, expected_sha1: str | None = None) -> np.ndarray:
    """Decode an index mask to a ``uint8`` ``(H, W)`` array; EXIF orientation is *not* applied.

    ``expected_sha1``: the file's bytes must hash to this (cache integrity check).
    """
    path = Path(path)
    data = _read_bytes(path, "mask")
    if expected_sha1 is not None and hashlib.sha1(data).hexdigest() != expected_sha1:
        raise DataError(f"{path}: cached mask does not match its manifest hash (corrupted cache)", path)
    arr = mask_array(_open(data, path, "mask"), path)
    if num_classes is not None:
        check_labels(arr, num_classes, path)
    return arr


def read_part(path: str | Path) -> np.ndarray:
    """A CelebAMask-HQ part PNG as a boolean array (pixel set where non-zero, in any channel)."""
    path = Path(path)
    img = _open(_read_bytes(path, "mask part"), path, "mask part")
    if img.mode in ("L", "1", "P") or img.mode.startswith("I"):
        return np.asarray(img) != 0
    arr = np.asarray(img.convert("RGB"))
    return arr.any(axis=2)


def merge_parts(parts: tuple[tuple[int, Path], ...] | list[tuple[int, Path]], name: str = "") -> np.ndarray:
    """Merge binary part masks into one label map: parts in class order, later classes overwrite earlier ones.

    This is what the official CelebAMask-HQ ``g_mask.py`` does (``im_base[part != 0] = class_index`` for
    each part in the 19-class order). Pixels covered by no part are background (0).
    """
    if not parts:
        raise DataError(f"sample {name}: no mask part files", None)
    merged: np.ndarray | None = None
    first: Path | None = None
    for cls, p in sorted(parts, key=lambda t: t[0]):
        m = read_part(p)
        if merged is None:
            merged = np.zeros(m.shape, dtype=np.uint8)
            first = Path(p)
        elif m.shape != merged.shape:
            raise DataError(
                f"{p}: part mask is {m.shape[1]}x{m.shape[0]} but {first.name} is {merged.shape[1]}x{merged.shape[0]}",
                p,
            )
        merged[m] = cls
    assert merged is not None
    return merged
