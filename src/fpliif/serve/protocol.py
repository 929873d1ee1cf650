"""uvicorn's h11 HTTP protocol with a deadline on the header phase (slowloris), and the server's options.

uvicorn times out idle keep-alive connections, but not a client that is still sending its request line and
headers: one header line per second holds a connection (and its buffer) for as long as the client likes, and
a fresh connection that sends nothing is never closed. :func:`protocol_class` adds a timer that starts with
the connection (and again with the first byte of each later request) and ends when h11 has the complete
request head; if it fires first, the client gets 408 with a JSON body and the connection is closed. The
body phase has its own limit (``upload_timeout``, enforced while the multipart body is read).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import ServeSettings


class HeaderTimeoutProtocol(H11Protocol):
    """:class:`H11Protocol` that closes connections whose request head takes longer than ``header_timeout``."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._timed_out = False
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._timed_out:
            return  # answered 408 already: discard what still arrives until the connection is closed
        if self.conn.their_state is h11.IDLE and self._header_timer is None:
            self._arm_header_timer()  # the first bytes of a later request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request head is complete (or the client errored)
            self._disarm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _disarm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being sent (pipelining): leave the connection to it
        body = json.dumps(
            {
                "error": "header_timeout",
                "detail": f"the request line and headers did not arrive within the server's "
                f"{self.header_timeout:g} s header timeout",
            }
        ).encode()
        head = (
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        self.transport.write(head + body)  # written directly: h11 has no request to answer yet
        # Half-close, then close a moment later: closing at once while the client is still sending could reset
        # the connection before the client has read the 408.
        self._timed_out = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(1.0, self.transport.close)


def protocol_class(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """A :class:`HeaderTimeoutProtocol` subclass with this header timeout (uvicorn's ``http=`` option)."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": float(header_timeout)})


def uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """Options of ``uvicorn.run`` / ``uvicorn.Config`` that enforce the service's connection limits."""
    return {
        "http": protocol_class(settings.header_timeout),
        "timeout_keep_alive": settings.keep_alive_timeout,
        "h11_max_incomplete_event_size": 16 * 1024,  # the request head: line + headers (uvicorn: plain 400 beyond)
        "server_header": False,
    }
