"""Run the app on a real uvicorn server in a background thread (for tests and notebooks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def background_server(app: Any, host: str = "127.0.0.1", start_timeout: float = 20.0) -> Iterator[str]:
    """Serve ``app`` on a free port of ``host`` in a daemon thread; yields the base URL (ending in ``/``).

    The server is asked to stop when the block ends and the thread is joined (bounded wait). The connection
    limits are those ``fpliif serve`` applies (:func:`~fpliif.serve.protocol.uvicorn_options`) for the app's
    settings.
    """
    import uvicorn

    from .protocol import uvicorn_options
    from .settings import ServeSettings

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    settings = getattr(getattr(app, "state", None), "settings", None) or ServeSettings()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **uvicorn_options(settings)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fpliif-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {host}:{port}")
            time.sleep(0.02)
        yield f"http://{host}:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
