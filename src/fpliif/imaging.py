"""One image decoder: any image Pillow reads -> ``(H, W, 3)`` uint8 RGB, with one rule per kind of file.

Training data (:func:`fpliif.data.io.read_image`), the parser (:func:`fpliif.infer.images.load_image`,
``FaceParser`` given a PIL image) and the service (:func:`fpliif.serve.imaging.decode_image`) all decode
through :func:`to_rgb`, so a file looks the same to training, evaluation and inference. numpy and Pillow
only (no torch): the ONNX Runtime path uses it too.

Rules:

* **EXIF orientation** is applied: the pixels are those of the image as displayed (:func:`apply_orientation`).
  A malformed EXIF block counts as unrotated.
* **RGB**: as stored. **Grayscale** (``L``, ``1``), **palette** (``P``: its colours), **CMYK**, **YCbCr**,
  **HSV**: Pillow's conversion to RGB.
* **Alpha** (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``; ``P``, ``L`` or ``RGB`` with a
  transparent colour, PNG ``tRNS``): composited over **white** (Pillow's ``alpha_composite``). White is
  what image viewers and the web page show behind a transparent face cut-out and what parsing did before
  this module; training uses the same rule, so a transparent dataset image becomes the picture a user would
  parse. Compositing moves no pixel, so image/mask pairs stay aligned whatever the colour; fully transparent
  pixels never expose the colour an encoder left behind them.
* **Integer grayscale deeper than 8 bits** (``I;16*``, ``I``): scaled by the bit depth,
  ``round(v * 255 / (2**bits - 1))``, clipped to 0..255. ``bits`` is the file's depth where it records one:
  the TIFF ``BitsPerSample`` (so a 32-bit TIFF is scaled from 32 bits), else 16 for ``I;16*`` and for PNG and
  PPM/PGM files (Pillow holds a 16-bit grey PNG as ``I`` in older versions, ``I;16`` in newer; a PGM's maxval
  over 255 scaled to 65535). A mode ``I`` image whose depth nothing records (an in-memory image, e.g.
  ``Image.fromarray(int32_array)`` or ``img.convert("I")``, or another format) is read by its values: 8 bits
  where they all lie in 0..255, else 16 where they fit 0..65535, else 32, with a warning on the
  ``fpliif.imaging`` logger (dark 16-bit content would pass for 8-bit).
* **Float** (``F``, e.g. float TIFFs): values in [0, 1] are scaled to 0..255 (``round(v * 255)``); values
  outside it by up to :data:`FLOAT_SLACK` are clipped (an overshoot of processing), others are a ValueError, as
  for numpy float arrays (:func:`check_float_range`: 0..255 data would come out white, a wrong parse); NaN
  becomes 0.
* **16-bit RGB(A) PNGs**: Pillow itself reduces them to 8 bits per channel on decoding.

Every rule is per pixel, so a large image is converted in strips of rows straight into the one output array:
its peak memory is Pillow's decoded image plus the output (about 7 bytes per pixel for RGB), not the 10 to 17
of converting it whole (Pillow keeps RGB at 4 bytes per pixel, and ``np.asarray`` of a whole image makes two
more copies of the pixels on the way).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger("fpliif.imaging")
_EXIF_ORIENTATION = 0x0112
_TIFF_BITS_PER_SAMPLE = 258
_SIXTEEN_BIT_FORMATS = ("PNG", "PPM")
"""Formats whose grey deeper than 8 bits Pillow decodes to 16-bit values (PNG: 16-bit; PGM: maxval scaled)."""
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
STRIP_PIXELS = 1 << 20
FLOAT_SLACK = 0.5
"""Float images (files and arrays) may lie this far outside [0, 1]; such values are clipped (see
:func:`check_float_range`)."""


def check_float_range(lo: float, hi: float, name: str | None = None) -> None:
    """ValueError (naming ``name`` where given) unless a float image's values [lo, hi] lie within
    :data:`FLOAT_SLACK` of [0, 1]."""
    if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
        raise ValueError(
            f"{name + ': ' if name else ''}float images must have values in [0, 1], got range [{lo:.4g}, {hi:.4g}] "
            "(0..255 data: convert it to 8 bits)"
        )


"""Images with more pixels are converted in strips of rows of about this many pixels."""


def exif_orientation(img: Any) -> int:
    """The EXIF orientation tag of a PIL image (1..8; 1 = as stored, also for a missing or malformed tag)."""
    try:
        value = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # malformed EXIF block: treat as unrotated
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(img: Any) -> Any:
    """The image as displayed (EXIF orientation applied); the same object when there is nothing to do."""
    if exif_orientation(img) == 1:
        return img
    from PIL import ImageOps

    return ImageOps.exif_transpose(img)


def has_alpha(img: Any) -> bool:
    """Whether a PIL image carries transparency (an alpha channel or a transparent palette colour)."""
    return img.mode in _ALPHA_MODES or (img.mode in ("P", "L", "RGB") and "transparency" in img.info)


def _is_deep_int(mode: str) -> bool:
    return mode.startswith("I;16") or mode == "I"


def _tiff_bits(img: Any) -> int | None:
    """The TIFF ``BitsPerSample`` of ``img`` (None: not a TIFF, or no valid tag)."""
    try:
        bits = img.tag_v2.get(_TIFF_BITS_PER_SAMPLE)  # TIFF only
    except AttributeError:
        return None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if isinstance(bits, int) and 1 <= bits <= 32 else None


def _file_bits(img: Any) -> int | None:
    """The bit depth of a deep integer image's samples where its file records it (module docstring), else None."""
    bits = _tiff_bits(img)
    if bits is not None:
        return bits
    return 16 if img.mode.startswith("I;16") or img.format in _SIXTEEN_BIT_FORMATS else None


def _range_bits(img: Any, name: str) -> int:
    """The bits of a mode ``I`` image of unknown depth, from its largest value (8, 16 or 32), with a warning."""
    hi = (img.getextrema() or (0, 0))[1]
    bits = next((b for b in (8, 16) if hi < (1 << b)), 32)
    log.warning(
        "%s: mode I image of unknown bit depth, values up to %d: read as %d-bit (save it as an 8-bit image, or as "
        "a 16-bit PNG or TIFF, to make its depth explicit)",
        name,
        hi,
        bits,
    )
    return bits


def _bits(img: Any, name: str) -> int:
    """The bit depth :func:`to_rgb` scales ``img``'s integer samples by (8 for modes it does not scale)."""
    if not _is_deep_int(img.mode):
        return 8
    bits = _file_bits(img)
    return _range_bits(img, name) if bits is None else bits


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def to_rgb(img: Any, exif: bool = True, name: str | None = None) -> np.ndarray:
    """A (loaded) PIL image of any mode -> ``(H, W, 3)`` uint8 RGB by the rules of this module.

    ``exif=False``: the caller has already applied the EXIF orientation. ``name``: the file or argument a
    warning names (default: the image's file name, else "image"). Raises ValueError for a mode that has no RGB
    conversion. Images over :data:`STRIP_PIXELS` are converted in strips of rows (the same pixels).
    """
    bits = _bits(img, name or getattr(img, "filename", None) or "image")  # the file's, before a rotated copy
    if exif:
        img = apply_orientation(img)
    w, h = img.size
    rows = max(1, STRIP_PIXELS // max(1, w))
    if h <= rows:
        return _convert(img, bits)
    out = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, rows):
        out[y : y + rows] = _convert(img.crop((0, y, w, min(h, y + rows))), bits)
    return out


def _convert(img: Any, bits: int) -> np.ndarray:
    """:func:`to_rgb` of an oriented image (or a strip of one) whose integer samples have ``bits`` bits."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return np.asarray(img)
    if _is_deep_int(mode):
        top = float(2**bits - 1)
        arr = np.asarray(img)
        if top <= 65535:
            values = np.clip(arr, 0, int(top)).astype(np.uint32)
            gray = ((values * 255 + int(top) // 2) // int(top)).astype(np.uint8)
        else:
            gray = np.clip(np.rint(arr.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
        return _gray_to_rgb(gray)
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        if arr.size:
            check_float_range(float(arr.min()), float(arr.max()))
        return _gray_to_rgb(np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8))
    if has_alpha(img):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    try:
        return np.asarray(img.convert("RGB"))
    except (ValueError, OSError) as e:
        raise ValueError(f"cannot convert image mode {mode} to RGB: {e}") from None
