"""Reading a ``multipart/form-data`` upload from an ASGI request stream, with a hard size limit.

The body is parsed while it arrives (python-multipart's streaming parser) and the request is refused with
413 as soon as the image part (or the whole body) grows past the limit, so an oversized upload is never
held in memory or spooled to disk. Only the part named ``file`` is kept; other fields are ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header

from .imaging import ApiError

FIELD = "file"
BODY_SLACK = 64 * 1024
"""Bytes allowed on top of the image limit for the multipart framing and any small extra fields."""


@dataclass
class Upload:
    data: bytes
    content_type: str
    filename: str | None


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "upload_too_large",
        f"upload too large: this server accepts images of at most {limit:,} bytes ({limit / 2**20:.3g} MiB)",
    )


async def read_upload(
    content_type: str | None,
    content_length: str | None,
    stream: AsyncIterator[bytes],
    limit: int,
    timeout: float | None = None,
) -> Upload:
    """Parse the ``file`` part of a multipart body from ``stream``; 413 past ``limit`` bytes, 415 if the
    request is not multipart, 400 if the multipart framing is broken, 422 if there is no ``file`` part,
    408 if the whole body has not arrived within ``timeout`` seconds."""
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"expected a multipart/form-data request with the image in form field {FIELD!r}, "
            f"got content type {(content_type or 'none')!r}",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "multipart/form-data request without a boundary")
    max_body = limit + BODY_SLACK
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise ApiError(400, "bad_request", f"invalid Content-Length {content_length!r}") from None
        if declared > max_body:
            raise _too_large(limit)

    state = _PartCollector(limit)
    try:
        await asyncio.wait_for(_feed(stream, MultipartParser(boundary, state.callbacks()), state, max_body), timeout)
    except asyncio.TimeoutError:
        raise ApiError(
            408,
            "upload_timeout",
            f"the upload did not arrive within the server's {timeout:g} s upload timeout; "
            "send the file faster or ask for a longer --upload-timeout",
        ) from None
    if state.found == 0:
        raise ApiError(
            422, "missing_file", f"no form field {FIELD!r}: upload the image as multipart form field {FIELD!r}"
        )
    if state.found > 1:
        raise ApiError(422, "multiple_files", f"send exactly one image in form field {FIELD!r}")
    return Upload(bytes(state.data), state.content_type, state.filename)


async def _feed(stream: AsyncIterator[bytes], parser: MultipartParser, state: _PartCollector, max_body: int) -> None:
    """Push the body through ``parser``; 413 past ``max_body`` bytes or the part limit, 400 on bad framing."""
    total = 0
    try:
        async for chunk in stream:
            total += len(chunk)
            if total > max_body:
                raise _too_large(state.limit)
            parser.write(chunk)
            if state.overflow:
                raise _too_large(state.limit)
        parser.finalize()
    except ApiError:
        raise
    except Exception as e:  # python-multipart's parse errors (malformed framing, oversized headers)
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {e}") from None


class _PartCollector:
    """python-multipart callbacks that keep the body of the ``file`` part (up to ``limit`` bytes)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.data = bytearray()
        self.content_type = ""
        self.filename: str | None = None
        self.found = 0
        self.overflow = False
        self._keep = False
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._keep = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        if opts.get(b"name", b"").decode("latin-1") != FIELD:
            return
        self.found += 1
        if self.found > 1:
            return
        self._keep = True
        self.content_type = self._headers.get(b"content-type", b"").decode("latin-1").strip()
        filename = opts.get(b"filename")
        self.filename = filename.decode("utf-8", "replace") if filename is not None else None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._keep or self.overflow:
            return
        if len(self.data) + (end - start) > self.limit:
            self.overflow = True
            return
        self.data += data[start:end]
