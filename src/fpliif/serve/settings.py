"""Settings of the web service. No FastAPI here.

Each field is a ``fpliif serve`` flag (:func:`fpliif.serve.cli.add_settings_flags` builds them): ``--`` + the
field's name with dashes unless its metadata names a ``flag``; its metadata ``help`` is the flag's help
(``%(default)s``: the field's default) and ``choices`` its choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..adaptive import DECODE_MODES
from ..errors import ConfigError
from ..limits import DEFAULT_MAX_PIXELS, default_max_pixels
from ..precision import INFERENCE_AMP_CHOICES
from ..validate import DEVICES, MAX_THREADS, cpu_count

DETECTORS = ("mtcnn", "haar")
DEFAULT_MAX_POINTS = 2**21
"""Decoder queries one request may cost by default: about a 1448 x 1448 aligned output, or 8 large faces."""


def option(default: Any = None, *, help: str, factory: Any = None, **flag: Any) -> Any:
    """A settings field with its flag's ``help`` (and ``flag``/``choices``); ``factory``: a default computed when
    the settings are made (the flag then defaults to None, meaning that)."""
    meta = {"help": help, **flag}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


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
        device: where the model runs, ``cpu`` or ``cuda`` (the weights the service loads; a parser passed to
            :func:`~fpliif.serve.app.create_app` keeps its own).
        timeout: seconds a request may wait for a worker plus parse before it gets 504.
        upload_timeout: seconds allowed for receiving the whole upload (408 beyond), so that a client
            sending very slowly cannot hold a connection and its buffer open indefinitely.
        header_timeout: seconds allowed for a request's line and headers, from the first byte (or from the
            connection) to the blank line ending them (408 and the connection closed beyond): a client sending
            one header line per second cannot hold a connection.
        keep_alive_timeout: seconds an idle keep-alive connection is kept open between requests.
        max_queue: requests allowed to wait for a worker; more get 503.
        tta: default of the ``tta`` query parameter (flip test-time augmentation, 2x the parse cost).
        amp: precision of the weights the service loads, as ``fpliif parse --amp`` (None: ``auto``; ``none`` for
            fp32, the same labels on every machine).
        detector: face detector of the weights the service loads, ``mtcnn`` (None: the default) or ``haar``.
        second_chance: photos are detected with the parser's checked second MTCNN pass
            (``FaceParser(second_chance=True)``).
        any_orientation: photos are also searched for faces turned on their side or upside down
            (``FaceParser(any_orientation=True)``).
        decode: default of the ``decode`` query parameter: ``"dense"`` (every pixel) or ``"adaptive"``
            (coarse to fine, re-querying only uncertain pixels; :mod:`fpliif.adaptive`; implicit models only);
            None (default): the model's default (:data:`~fpliif.adaptive.DEFAULT_DECODE` for FP-LIIF, dense for
            dense models such as SegFace and STN-iCNN).
    """

    host: str = option("127.0.0.1", help="interface to bind (default %(default)s: this machine only)")
    port: int = option(8000, help="TCP port (default %(default)s)")
    max_upload_mb: float = option(20.0, help="largest image file, MiB (413; default %(default)s)")
    max_pixels: int = option(
        factory=default_max_pixels,
        help=f"largest image in pixels (413; default $FPLIIF_MAX_PIXELS or {DEFAULT_MAX_PIXELS}, as fpliif parse; "
        "a server keeps a limit: 0 is refused)",
    )
    max_size: int = option(
        2048, help="largest output side: the 'size' parameter, and an aligned upload's own size (default %(default)s)"
    )
    max_points: int = option(
        DEFAULT_MAX_POINTS,
        help="most work per request, in decoder queries: output pixels of each face, x2 with TTA; "
        "checked before the work starts (413/422; default %(default)s)",
    )
    workers: int = option(
        1, flag="--workers-threads", help="parses running at once, each on its own thread (default %(default)s)"
    )
    torch_threads: int | None = option(None, help="CPU threads per parse (default: CPUs // --workers-threads)")
    device: str = option("cpu", choices=DEVICES, help="where the model runs (default %(default)s)")
    timeout: float = option(60.0, help="seconds per request: wait + parse (504; default %(default)s)")
    upload_timeout: float = option(30.0, help="seconds allowed for receiving an upload (408; default %(default)s)")
    header_timeout: float = option(
        10.0, help="seconds allowed for a request's line and headers (408, connection closed; default %(default)s)"
    )
    keep_alive_timeout: float = option(
        5.0, help="seconds an idle keep-alive connection is kept open between requests (default %(default)s)"
    )
    max_queue: int = option(64, help="requests allowed to wait for a worker (503; default %(default)s)")
    tta: bool = option(False, help="flip test-time augmentation by default (requests may still pass tta=false)")
    second_chance: bool = option(
        False,
        help="photos: a second, checked MTCNN detection pass (more turned, rolled and small faces; about 4x the "
        "detection time; docs/detection.md)",
    )
    any_orientation: bool = option(
        False,
        help="photos: also find faces turned on their side or upside down (the detector runs on the 3 quarter turns "
        "too; about 4x the detection time; docs/detection.md)",
    )
    amp: str | None = option(
        None,
        choices=INFERENCE_AMP_CHOICES,
        help="precision, as fpliif parse --amp: auto (default: bf16 only where the CPU/GPU has it natively), none "
        "(fp32: the same labels on every machine), bf16, fp16 or int8",
    )
    detector: str | None = option(
        None,
        choices=DETECTORS,
        help="face detector, as fpliif parse --detector: mtcnn (default) or haar",
    )
    decode: str | None = option(
        None,
        choices=DECODE_MODES,
        help="default decoding (requests may pass decode=...): dense, every pixel, or adaptive, coarse to fine, "
        "re-querying the decoder only where the prediction is uncertain (implicit models only); default: the "
        "model's (adaptive for FP-LIIF, dense for dense models)",
    )

    def __post_init__(self) -> None:
        checks = [
            ("max_upload_mb", 0 < self.max_upload_mb < math.inf, "must be a finite number > 0"),
            ("max_pixels", self.max_pixels >= 1, "must be >= 1 (a server keeps a limit; 0 = none is fpliif parse's)"),
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
            ("max_points", self.max_points >= 1, "must be >= 1 (a server keeps a limit; 0 = none is fpliif parse's)"),
            ("max_queue", self.max_queue >= 0, "must be >= 0"),
            ("port", 0 <= self.port <= 65535, "must be in 0..65535"),
            ("decode", self.decode in (None, *DECODE_MODES), "must be 'dense', 'adaptive' or None"),
            ("amp", self.amp in (None, *INFERENCE_AMP_CHOICES), f"must be one of {', '.join(INFERENCE_AMP_CHOICES)}"),
            ("detector", self.detector in (None, *DETECTORS), f"must be one of {', '.join(DETECTORS)}"),
            (
                "second_chance",
                not (self.second_chance and self.detector == "haar"),
                "is a second MTCNN pass: not with detector haar",
            ),
            (
                "any_orientation",
                not (self.any_orientation and self.detector == "haar"),
                "turns faces upright by their MTCNN landmarks: not with detector haar",
            ),
            ("device", self.device in DEVICES, f"must be one of {', '.join(DEVICES)}"),
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
