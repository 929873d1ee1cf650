"""Settings of the web service (``fpliif serve`` flags). No FastAPI here."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from ..adaptive import DECODE_MODES
from ..errors import ConfigError
from ..limits import default_max_pixels
from ..validate import MAX_THREADS

DEFAULT_MAX_POINTS = 2**21
"""Decoder queries one request may cost by default: about a 1448 x 1448 aligned output, or 8 large faces."""


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass
class ServeSettings:
    """Limits and resources of the service.

    Attributes:
        host, port: where ``fpliif serve`` listens (loopback by default: no authentication is built in).
        max_upload_mb: largest accepted image file (413 beyond; enforced while the body is read).
        max_pixels: largest accepted image in pixels, checked from the header before decoding (413 beyond);
            default :data:`fpliif.limits.DEFAULT_MAX_PIXELS` or ``$FPLIIF_MAX_PIXELS``, as the CLI and library.
        max_size: largest output side: the ``size`` query parameter (422 beyond) and the size an aligned upload
            implies without ``size`` (413 beyond).
        max_points: the most work one request may cost, in decoder queries (output pixels of each face, twice
            with TTA); checked before the work starts (aligned) or right after detection (photos): 422 when an
            explicit ``size`` asks for more, 413 when the upload implies it.
        workers: parses run at the same time (threads; each gets ``torch_threads`` CPU threads).
        torch_threads: CPU threads per parse (None: CPUs // workers; 0: leave torch's setting alone).
        timeout: seconds a request may wait for a worker plus parse before it gets 504.
        upload_timeout: seconds allowed for receiving the whole upload (408 beyond), so that a client
            sending very slowly cannot hold a connection and its buffer open indefinitely.
        header_timeout: seconds allowed for a request's line and headers, from the first byte (or from the
            connection) to the blank line ending them (408 and the connection closed beyond): a client sending
            one header line per second cannot hold a connection.
        keep_alive_timeout: seconds an idle keep-alive connection is kept open between requests.
        max_queue: requests allowed to wait for a worker; more get 503.
        tta: default of the ``tta`` query parameter (flip test-time augmentation, 2x the parse cost).
        decode: default of the ``decode`` query parameter: ``"dense"`` (every pixel) or ``"adaptive"``
            (coarse to fine, re-querying only uncertain pixels; :mod:`fpliif.adaptive`; implicit models only);
            None (default): the model's default (:data:`~fpliif.adaptive.DEFAULT_DECODE` for FP-LIIF, dense for
            dense models such as SegFace and STN-iCNN).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 20.0
    max_pixels: int = field(default_factory=default_max_pixels)
    max_size: int = 2048
    max_points: int = DEFAULT_MAX_POINTS
    workers: int = 1
    torch_threads: int | None = None
    timeout: float = 60.0
    upload_timeout: float = 30.0
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_queue: int = 64
    tta: bool = False
    decode: str | None = None

    def __post_init__(self) -> None:
        checks = [
            ("max_upload_mb", 0 < self.max_upload_mb < math.inf, "must be a finite number > 0"),
            ("max_pixels", self.max_pixels >= 1, "must be >= 1"),
            ("max_size", self.max_size >= 8, "must be >= 8"),
            ("workers", 1 <= self.workers <= MAX_THREADS, f"must be in 1..{MAX_THREADS}"),
            (
                "torch_threads",
                self.torch_threads is None or 0 <= self.torch_threads <= MAX_THREADS,
                f"must be in 0..{MAX_THREADS}",
            ),
            ("timeout", self.timeout > 0, "must be > 0"),
            ("upload_timeout", self.upload_timeout > 0, "must be > 0"),
            ("header_timeout", self.header_timeout > 0, "must be > 0"),
            ("keep_alive_timeout", self.keep_alive_timeout > 0, "must be > 0"),
            ("max_points", self.max_points >= 1, "must be >= 1"),
            ("max_queue", self.max_queue >= 0, "must be >= 0"),
            ("port", 0 <= self.port <= 65535, "must be in 0..65535"),
            ("decode", self.decode in (None, *DECODE_MODES), "must be 'dense', 'adaptive' or None"),
        ]
        for name, ok, msg in checks:
            if not ok:
                raise ConfigError(name, f"{msg}, got {getattr(self, name)!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def threads_per_worker(self) -> int:
        """CPU threads for each parse: the explicit setting, else CPUs // workers (at least 1)."""
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, cpu_count() // self.workers)
