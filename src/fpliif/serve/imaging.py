"""Uploads -> images, label maps -> PNG / RLE for the web service. No FastAPI and no torch here.

Everything a client sends is untrusted: :func:`open_upload` checks the declared content type, sniffs the
bytes, and reads only the image header (pixel count) before anything is decoded; :func:`decode_image`
then decodes with every decoder error mapped to an :class:`ApiError` (never an unhandled exception).

RLE masks (``rle=true`` on ``POST /v1/parse``) use COCO's *uncompressed* RLE layout, but scan the mask in
**row-major** order (x fastest, like the PNG), not COCO's column-major order: ``counts`` alternates runs of
0 (outside the class) and 1 (inside), starting with a run of 0s (which is 0 long when the first pixel is
inside), and sums to ``H * W``. :func:`rle_encode` / :func:`rle_decode` are the reference implementation.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np

from ..labels import index_png  # noqa: F401 - the service's label-map PNG (one encoder)

# Sniffed format -> (PIL format name, human name). Only these decoders are ever run on uploads.
FORMATS = {
    "JPEG": "JPEG",
    "PNG": "PNG",
    "GIF": "GIF",
    "BMP": "BMP",
    "WEBP": "WebP",
    "TIFF": "TIFF",
    "PPM": "PPM/PGM",  # as `fpliif parse` reads them
}
SUPPORTED_TYPES = {
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/pjpeg": "JPEG",
    "image/png": "PNG",
    "image/x-png": "PNG",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/x-bmp": "BMP",
    "image/x-ms-bmp": "BMP",
    "image/webp": "WEBP",
    "image/tiff": "TIFF",
    "image/x-portable-pixmap": "PPM",
    "image/x-portable-graymap": "PPM",
    "image/x-portable-anymap": "PPM",
}
GENERIC_TYPES = ("", "application/octet-stream", "binary/octet-stream")
"""Declared types that say nothing about the content (the bytes decide)."""


class ApiError(Exception):
    """An error answered to the client: HTTP status, a short machine-readable code and a message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def supported_formats_text() -> str:
    return ", ".join(FORMATS.values())


def sniff(data: bytes) -> str | None:
    """The image format of ``data`` from its magic bytes (a key of :data:`FORMATS`), or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data.startswith(b"BM") and len(data) >= 26:
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if len(data) >= 3 and data[:1] == b"P" and data[1:2] in b"2356" and data[2:3].isspace():
        return "PPM"  # netpbm grey/colour, ASCII or binary (P2, P3, P5, P6)
    return None


def describe_bytes(data: bytes) -> str:
    """A short guess at what non-image bytes are, for error messages."""
    head = data[:1024]
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftypavif"):
        return "a HEIF/AVIF image (not supported; convert it to JPEG or PNG)"
    if head.lstrip().startswith((b"<svg", b"<?xml")):
        return "an SVG/XML document"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unrecognised binary data"


def media_type(declared: str | None) -> str:
    """``'image/JPEG; charset=x'`` -> ``'image/jpeg'``."""
    return (declared or "").split(";", 1)[0].strip().lower()


def check_type(data: bytes, declared: str | None) -> str:
    """Check the declared content type and the sniffed bytes; return the sniffed format.

    415 if the declared type is neither a supported image type nor a generic one (octet-stream or none),
    or if the bytes are not one of the supported formats; 422 for an empty upload.
    """
    declared_type = media_type(declared)
    if declared_type not in SUPPORTED_TYPES and declared_type not in GENERIC_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"unsupported content type {declared_type!r}: upload an image ({supported_formats_text()})",
        )
    if not data:
        raise ApiError(422, "empty_upload", "the uploaded file is empty (0 bytes)")
    fmt = sniff(data)
    if fmt is None:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the uploaded file is {describe_bytes(data)}, not a supported image ({supported_formats_text()})",
        )
    return fmt


def open_upload(data: bytes, declared: str | None, max_pixels: int) -> Any:
    """Type checks, then open the image lazily (header only) and check its pixel count (413).

    Returns an unloaded PIL image; decode it with :func:`decode_image`.
    """
    from PIL import Image, UnidentifiedImageError

    fmt = check_type(data, declared)
    try:
        img = Image.open(io.BytesIO(data), formats=[fmt])
        w, h = img.size
    except Image.DecompressionBombError as e:  # Pillow's own limit, far above most servers' max_pixels
        claimed = re.search(r"\((\d+) pixels\)", str(e))
        has = f"has {int(claimed[1]):,} pixels" if claimed else "is too large for Pillow to open"
        raise ApiError(413, "too_many_pixels", f"image {has}; this server accepts at most {max_pixels:,}") from None
    except UnidentifiedImageError:
        raise ApiError(
            422, "undecodable_image", f"cannot read the image: it starts like a {FORMATS[fmt]} file but is damaged"
        ) from None
    except Exception as e:  # any decoder error on untrusted bytes is the client's
        raise ApiError(422, "undecodable_image", f"cannot read the {FORMATS[fmt]} image: {_reason(e)}") from None
    if w <= 0 or h <= 0:
        raise ApiError(422, "undecodable_image", f"the {FORMATS[fmt]} image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ApiError(
            413,
            "too_many_pixels",
            f"image has {w}x{h} = {w * h:,} pixels; this server accepts at most {max_pixels:,}",
        )
    return img


def displayed_size(img: Any) -> tuple[int, int]:
    """(W, H) of an opened upload as displayed: EXIF orientations 5-8 (quarter turns) swap the stored sides."""
    from ..imaging import exif_orientation

    w, h = img.size
    return (h, w) if exif_orientation(img) >= 5 else (w, h)


def upload_warnings(data: bytes, fmt: str) -> list[str]:
    """What the answer should warn about an upload: its frames beyond the first, which are not parsed (the note
    ``fpliif parse`` logs, :func:`fpliif.infer.images.frames_note`). Counted on a handle of its own, so the
    image being decoded keeps its frame; a file too damaged to count gets no warning (its decoding answers)."""
    from PIL import Image

    from ..infer.images import frames_note

    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:
            note = frames_note(img)
    except Exception:  # untrusted bytes: any decoder error is left to decode_image
        return []
    return [note] if note else []


def decode_image(img: Any, max_side: int | None = None) -> np.ndarray:
    """Decode an image from :func:`open_upload` to (H, W, 3) uint8 RGB by the one rule of
    :func:`fpliif.imaging.to_rgb` (EXIF orientation, transparency over white, 16-bit and float images scaled).

    ``max_side``: shrink (never enlarge) so the longer side is at most this (JPEGs decode at a reduced
    DCT scale first, which is much faster for big photos).
    """
    from PIL import Image

    from ..imaging import to_rgb

    fmt = img.format or "image"
    try:
        if max_side and img.format == "JPEG":
            img.draft("RGB", (max_side, max_side))
        img.load()
        rgb = to_rgb(img)
    except Image.DecompressionBombError as e:
        raise ApiError(413, "too_many_pixels", f"image too large: {e}") from None
    except MemoryError:
        raise ApiError(413, "too_many_pixels", "not enough memory to decode this image") from None
    except Exception as e:  # truncated/corrupt data: any decoder error is the client's
        raise ApiError(422, "undecodable_image", f"cannot decode the {fmt} image: {_reason(e)}") from None
    finally:
        img.close()
    h, w = rgb.shape[:2]
    if max_side and max(h, w) > max_side:
        import cv2

        s = max_side / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text[:200]


# ---------------------------------------------------------------------------------------------- outputs
def rgb_png(img: Any) -> bytes:
    """A PIL image as PNG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def rle_encode(mask: np.ndarray) -> list[int]:
    """Row-major uncompressed RLE of a boolean mask: alternating runs of 0 and 1, starting with 0s."""
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def rle_decode(counts: list[int], shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rle_encode`: (H, W) bool mask."""
    h, w = shape
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise ValueError(f"RLE counts must be >= 0 and sum to {h}*{w}={h * w}, got sum {sum(counts)}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(h, w)


def rle_masks(labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """The ``rle`` block of the JSON response: one mask per class present in ``labels`` (index order)."""
    h, w = labels.shape
    masks = []
    for k in np.unique(labels).tolist():
        name = classes[k] if k < len(classes) else f"label_{k}"
        masks.append({"index": int(k), "class": name, "size": [h, w], "counts": rle_encode(labels == k)})
    return {
        "format": "uncompressed RLE (COCO layout), row-major",
        "order": "row-major",
        "size": [h, w],
        "masks": masks,
    }
