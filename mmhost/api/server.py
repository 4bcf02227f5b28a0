"""Running the app under uvicorn: in the foreground (``mmhost serve``) or on a background
thread (the demo, tests, benchmarks).

uvicorn owns SIGINT/SIGTERM in the foreground: it stops accepting, lets requests in flight
finish (up to ``GRACE`` seconds), then returns; the caller closes the Host after that.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from mmhost.api.app import create_app
from mmhost.host import Host

GRACE = 30  # seconds in-flight requests get to finish on shutdown

log = logging.getLogger("mmhost.api")


def config(host: Host, app: Any = None) -> uvicorn.Config:
    s = host.settings
    return uvicorn.Config(
        app or create_app(host),
        host=s.host,
        port=s.port,
        log_level=s.log_level,
        access_log=s.log_level == "debug",
        timeout_graceful_shutdown=GRACE,
        server_header=False,
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's (first signal: graceful stop; second: force), but the signal is not
        raised again afterwards, so the host is closed and a graceful stop exits 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(host: Host) -> None:
    """Serve until SIGINT/SIGTERM (requests in flight finish), then close the host."""
    try:
        _Server(config(host)).run()
    finally:
        host.close()


class ServerThread:
    """A real uvicorn server on a background thread. ``port=0`` picks a free port; ``url``
    says which. ``app``: serve this app (made by ``create_app(host)``) instead of a new one."""

    def __init__(self, host: Host, port: int | None = None, app: Any = None) -> None:
        cfg = config(host, app)
        if port is not None:
            cfg.port = port
        self.server = uvicorn.Server(cfg)
        self._thread = threading.Thread(target=self.server.run, name="mmhost-http", daemon=True)

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start (see the log)")
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        sock = self.server.servers[0].sockets[0]
        addr, port = sock.getsockname()[:2]
        return f"http://{addr}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=GRACE + 5)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
