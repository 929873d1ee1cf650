"""The served model: the loaded parser, its worker threads and the concurrency gate (:class:`Engine`).

Parses run on a small thread pool, off the event loop; an anyio ``CapacityLimiter`` bounds them to
``settings.workers`` at a time, and each gets ``settings.threads_per_worker()`` torch threads. No routes here
(:mod:`fpliif.serve.routes`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from .. import __version__, limits
from ..adaptive import DEFAULT_DECODE
from ..labels import get_label_set, remap_targets
from .imaging import ApiError, decode_image, displayed_size, index_png, rgb_png, rle_encode, rle_masks
from .settings import ServeSettings

log = logging.getLogger("fpliif.serve")


def _is_parser(obj: Any) -> bool:
    return hasattr(obj, "parse_aligned") and hasattr(obj, "label_set") and callable(obj)


def load_parser(
    weights: str | Path | None, device: str = "cpu", amp: str | None = None, detector: str | None = None
) -> tuple[Any, str]:
    """FaceParser on ``device`` for a bundled name / file path / None (default); and the weights' name (stem).
    ``amp``, ``detector``: as ``fpliif parse --amp/--detector`` (None: the parser's defaults)."""
    from ..infer.parser import FaceParser
    from ..models.pretrained import resolve_weights

    path = resolve_weights(weights)
    options: dict[str, Any] = {} if amp is None else {"amp": amp}
    if detector is not None:
        options["detector"] = detector
    return FaceParser.from_pretrained(path, device=device, **options), path.stem


def model_info(parser: Any, weights_name: str | None) -> dict[str, Any]:
    """Name, weights, classes, colours, parameter count, versions and input size of the served model."""
    backend = getattr(parser, "backend", None)
    model = getattr(backend, "model", None)
    spec = getattr(model, "spec", None) or {}
    params = None
    if hasattr(model, "num_parameters"):
        params = int(model.num_parameters())
    elif hasattr(model, "parameters"):
        params = int(sum(p.numel() for p in model.parameters()))
    meta = getattr(model, "weights_metadata", None) or {}
    ls = parser.label_set
    return {
        "name": spec.get("name") if isinstance(spec, dict) and spec.get("name") else type(model).__name__,
        "weights": weights_name,
        "backend": getattr(backend, "name", None),
        "version": __version__,
        "weights_format": meta.get("fpliif_format"),
        "label_set": ls.name,
        "num_classes": ls.num_classes,
        "classes": list(ls.classes),
        "colors": [list(map(int, c)) for c in ls.colors],
        "label_sets": remap_targets(ls),
        "params": params,
        "input_size": int(getattr(parser, "input_size", 0)) or None,
        "amp": getattr(backend, "amp", None) or ("none" if getattr(backend, "name", None) == "onnxruntime" else None),
        "detector": _detector_name(getattr(parser, "detector", None)),
        "temperature": getattr(backend, "temperature", None),
    }


def _detector_name(detector: Any) -> str | None:
    """``mtcnn`` or ``haar`` for the library's detectors (None: the parser makes its default, MTCNN, when first
    used), else the class name."""
    if detector is None:
        return "mtcnn"
    names = {"MTCNNDetector": "mtcnn", "HaarDetector": "haar"}
    return names.get(type(detector).__name__, type(detector).__name__)


@dataclass
class ParseOptions:
    aligned: bool
    size: int | None
    fmt: str
    overlay: bool
    rle: bool
    alpha: float
    legend: bool
    tta: bool = False
    decode: str = "dense"
    labels: str | None = None  # output label set (None: the model's)
    mask: tuple[str, ...] = ()  # class names of the output label set
    context: bool | None = None  # photos: the context window (None: the parser's default)
    feather: float | None = None  # photos: the face window's band blended into the context's (None: the parser's)
    keep_detached: bool | None = None  # photos: keep labels that reach no face (None: the parser's drop_detached)
    extend: bool | None = None  # photos: continue clothes, hair, neck past the context windows (None: the parser's)


def label_options(model_set: Any, labels: str | None, mask: str | None) -> tuple[str | None, tuple[str, ...]]:
    """Check the ``labels`` and ``mask`` query parameters against the model's label set; 422 if bad."""
    target = model_set
    if labels is not None:
        try:
            model_set.remap_to(labels)
        except ValueError as e:
            raise ApiError(422, "invalid_parameter", f"labels: {e}") from None
        target = get_label_set(labels)
    names: tuple[str, ...] = ()
    if mask is not None:
        names = tuple(dict.fromkeys(n.strip() for n in mask.split(",") if n.strip()))
        try:
            target.indices(names)
        except ValueError as e:
            raise ApiError(422, "invalid_parameter", f"mask: {e}") from None
    return labels, names


@dataclass
class ParseOutput:
    body: bytes | None
    media_type: str
    payload: dict[str, Any] | None
    faces: int
    message: str | None


DISCONNECT_POLL_S = 0.25
"""How often :meth:`Engine.run` asks whether a request's client is still connected."""


async def _watch(
    disconnected: Callable[[], Awaitable[bool]], deadline: limits.Deadline, waiting: list[anyio.CancelScope]
) -> None:
    """Poll ``disconnected()`` until it says so; then cancel ``deadline`` (a running parse stops at its next check)
    and the queue wait in ``waiting``, if any."""
    while deadline.cancelled is None:
        await asyncio.sleep(DISCONNECT_POLL_S)
        if await disconnected():
            deadline.cancel("the client closed the connection")
            for scope in waiting:
                scope.cancel()


class Engine:
    """The loaded parser, its worker threads and the concurrency gate."""

    def __init__(self, parser: Any, settings: ServeSettings, weights_name: str | None = None):
        self.parser = parser
        self.settings = settings
        self.info = model_info(parser, weights_name)
        self.decode = getattr(parser, "decode", DEFAULT_DECODE)  # the parser's: by its model, FP-LIIF or dense
        self.decode = self.decode_mode(settings.decode)
        if settings.second_chance:
            if not hasattr(parser, "second_chance"):
                raise ValueError("--second-chance: the served parser has no MTCNN second pass")
            parser.second_chance = True  # FaceParser checks that its detector is MTCNN
        if settings.any_orientation:
            if not hasattr(parser, "any_orientation"):
                raise ValueError("--any-orientation: the served parser cannot look for turned faces")
            parser.any_orientation = True  # FaceParser checks that its detector gives landmarks
        self.threads = settings.threads_per_worker()
        self.busy = 0  # parses running now
        self.admitted = 0  # requests waiting for a worker or running
        self.served = 0
        self._lock = threading.Lock()
        self._detect_lock = threading.Lock()  # OpenCV cascades are not safe to share between threads
        self._executor: ThreadPoolExecutor | None = None
        self._gate: anyio.CapacityLimiter | None = None
        self._gate_loop: asyncio.AbstractEventLoop | None = None
        self._set_threads()

    def decode_mode(self, decode: str | None, name: str = "decode") -> str:
        """A request's (or the server's) decoding, None: the server's default; ValueError naming ``name`` for
        adaptive decoding of a dense model."""
        if decode is None:
            return self.decode
        if decode == "adaptive" and not getattr(self.parser, "implicit", True):
            raise ValueError(
                f"{name}=adaptive queries an implicit decoder (FP-LIIF); the served model {self.info['name']!r} is "
                "dense: use decode=dense"
            )
        return decode

    # ------------------------------------------------------------------------------------------ resources
    def _set_threads(self) -> None:
        if self.threads and self.info["backend"] == "torch":
            import torch

            torch.set_num_threads(self.threads)

    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.settings.workers, thread_name_prefix="fpliif-parse", initializer=self._set_threads
            )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _limiter(self, loop: asyncio.AbstractEventLoop) -> anyio.CapacityLimiter:
        # One gate per event loop (a server has one; test clients may start several in turn).
        if self._gate is None or self._gate_loop is not loop:
            self._gate = anyio.CapacityLimiter(self.settings.workers)
            self._gate_loop = loop
        return self._gate

    # ------------------------------------------------------------------------------------------ running
    async def run(self, fn: Any, disconnected: Callable[[], Awaitable[bool]] | None = None) -> Any:
        """Run ``fn()`` on a worker thread: at most ``workers`` at once, 503 if ``max_queue`` requests are
        already waiting, 504 if waiting plus running takes longer than the timeout. ``disconnected`` (e.g.
        Starlette's ``request.is_disconnected``) is polled meanwhile: once the client has gone, a request still
        waiting leaves the queue and a running parse stops at its next check (499, logged)."""
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = limits.Deadline(s.timeout)  # the worker stops at it too (fpliif.limits.check_deadline)
        gate, token = self._limiter(loop), object()  # the token holds a worker until the parse ends
        with self._lock:
            if self.admitted >= s.workers + s.max_queue:
                raise ApiError(
                    503, "busy", f"server busy: {self.admitted - self.busy} requests are already waiting; retry later"
                )
            self.admitted += 1
        waiting: list[anyio.CancelScope] = []  # the queue wait, while there is one
        watcher = None if disconnected is None else asyncio.ensure_future(_watch(disconnected, deadline, waiting))
        try:
            await self._wait_for_worker(gate, token, waiting, deadline)
            return await self._run_on_worker(fn, loop, gate, token, deadline)
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _wait_for_worker(
        self, gate: anyio.CapacityLimiter, token: object, waiting: list[anyio.CancelScope], deadline: limits.Deadline
    ) -> None:
        s = self.settings
        try:
            with anyio.fail_after(s.timeout), anyio.CancelScope() as scope:
                waiting.append(scope)
                await gate.acquire_on_behalf_of(token)
        except BaseException as e:
            self._leave()
            if isinstance(e, TimeoutError):
                raise ApiError(
                    504, "timeout", f"no worker became free within the server's {s.timeout:g} s timeout; retry later"
                ) from None
            raise
        finally:
            waiting.clear()
        if scope.cancelled_caught:  # the client went away while waiting
            self._leave()
            log.info("request dropped before parsing: %s", deadline.cancelled)
            raise ApiError(499, "client_closed_request", f"not parsed: {deadline.cancelled}")

    async def _run_on_worker(
        self,
        fn: Any,
        loop: asyncio.AbstractEventLoop,
        gate: anyio.CapacityLimiter,
        token: object,
        deadline: limits.Deadline,
    ) -> Any:
        try:
            fut = loop.run_in_executor(self.executor(), self._counted, fn, deadline)
        except BaseException:
            self._leave()
            gate.release_on_behalf_of(token)
            raise

        def done(f: asyncio.Future) -> None:
            gate.release_on_behalf_of(token)
            if not f.cancelled():
                f.exception()  # retrieved: the 504 was answered already when the work stops at its deadline

        fut.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout=max(0.001, deadline.remaining()))
        except asyncio.TimeoutError:
            s = self.settings
            raise ApiError(
                504,
                "timeout",
                f"parsing took longer than the server's {s.timeout:g} s timeout; "
                "try a smaller image or a smaller 'size'",
            ) from None

    @property
    def waiting(self) -> int:
        """Requests admitted but not yet running."""
        return max(0, self.admitted - self.busy)

    def _leave(self) -> None:
        with self._lock:
            self.admitted -= 1

    def _counted(self, fn: Any, deadline: limits.Deadline | None = None) -> Any:
        with self._lock:
            self.busy += 1
        s = self.settings
        try:
            with limits.scope(deadline=deadline, max_points=s.max_points, max_pixels=s.max_pixels):
                limits.check_deadline()  # waited in the queue past the deadline: do not start
                return fn()
        except ApiError:
            raise
        except limits.Cancelled as e:
            log.info("parse stopped: %s", e)
            raise ApiError(499, "client_closed_request", f"parsing was stopped: {e}") from None
        except limits.DeadlineExceeded:
            stopped = f"parsing was stopped at the server's {s.timeout:g} s timeout"
            raise ApiError(504, "timeout", f"{stopped}; try a smaller image or a smaller 'size'") from None
        except limits.OverBudget as e:
            raise ApiError(
                413,
                "over_budget",
                f"{e.what or 'this request'} needs {e.value:,} decoder queries; this server allows at most "
                f"{e.limit:,} per request (fpliif serve --max-points): ask for less work, e.g. a smaller 'size' "
                "(the photo is shrunk first), context=false, or tta=false",
            ) from None
        except limits.TooManyPixels as e:
            detail = f"{e.what or 'image'}: {e.value:,} pixels; this server accepts at most {e.limit:,}"
            raise ApiError(413, "too_many_pixels", detail) from None
        except MemoryError:
            raise ApiError(413, "too_large", "not enough memory for this request; try a smaller image") from None
        except ValueError as e:  # the library's refusals of its input
            raise ApiError(422, "unprocessable_image", str(e)[:500]) from None
        except Exception:
            log.exception("parse failed")
            raise ApiError(500, "internal_error", "the server failed to parse this image (logged)") from None
        finally:
            with self._lock:
                self.busy -= 1
                self.admitted -= 1
                self.served += 1

    def parse(self, img: Any, opts: ParseOptions) -> ParseOutput:
        """Decode, parse and encode one upload (runs on a worker thread)."""
        t0 = time.perf_counter()
        upload_size = displayed_size(img)
        rgb = decode_image(img, max_side=None if opts.aligned else opts.size)
        t1 = time.perf_counter()
        limits.check_deadline()
        if opts.aligned:
            result = self.parser.parse_aligned(rgb, size=opts.size, tta=opts.tta, decode=opts.decode)
        else:
            with self._detect_lock:
                dets = self.parser.detect(rgb)
            limits.check_deadline()
            drop = None if opts.keep_detached is None else not opts.keep_detached
            extra = {
                k: v
                for k, v in (
                    ("context", opts.context),
                    ("feather", opts.feather),
                    ("drop_detached", drop),
                    ("extend", opts.extend),
                )
                if v is not None
            }
            result = self.parser(rgb, boxes=dets, tta=opts.tta, decode=opts.decode, **extra)
        t2 = time.perf_counter()
        limits.check_deadline()
        if opts.labels is not None:
            result = result.remap(opts.labels)
        message = result.message
        faces = len(result.faces)
        if opts.mask and opts.fmt == "png":
            from PIL import Image

            body = rgb_png(Image.fromarray(result.mask(*opts.mask).astype("uint8") * 255))
            return ParseOutput(body, "image/png", None, faces, message)
        if opts.overlay:
            body = rgb_png(result.overlay(opts.alpha, legend=opts.legend))
            return ParseOutput(body, "image/png", None, faces, message)
        if opts.fmt == "png":
            return ParseOutput(index_png(result.labels, result.label_set), "image/png", None, faces, message)
        w, h = result.size
        payload: dict[str, Any] = {
            "mode": "aligned" if opts.aligned else "photo",
            "size": [w, h],
            "input_size": list(upload_size),
            "num_faces": faces,
            "faces": [f.to_dict() for f in result.faces],
            "class_share": {k: round(v, 6) for k, v in result.class_share().items()},
            "classes": list(result.classes),
            "colors": [list(map(int, c)) for c in result.label_set.colors],
            "label_set": result.label_set.name,
            "tta": opts.tta,
            "decode": opts.decode,
        }
        if message:
            payload["message"] = message
        if opts.rle:
            payload["rle"] = rle_masks(result.labels, tuple(result.classes))
        if opts.mask:
            hw = list(result.labels.shape)
            payload["masks"] = {
                "order": "row-major",
                "size": hw,
                "masks": [
                    {"index": result.label_set.index(n), "class": n, "size": hw, "counts": rle_encode(result.mask(n))}
                    for n in opts.mask
                ],
            }
        t3 = time.perf_counter()
        payload["timing_ms"] = {
            "decode": round((t1 - t0) * 1000, 1),
            "parse": round((t2 - t1) * 1000, 1),
            "encode": round((t3 - t2) * 1000, 1),
        }
        return ParseOutput(None, "application/json", payload, faces, message)
