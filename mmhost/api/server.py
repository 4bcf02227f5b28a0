"""Running the app under uvicorn: in the foreground (``mmhost serve``) or on a background
thread (the demo, tests, benchmarks).

uvicorn owns SIGINT/SIGTERM in the foreground: it stops accepting, lets requests in flight
finish (up to ``GRACE`` seconds), then returns; the caller closes the Host after that.
"""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from mmhost.api.app import create_app
from mmhost.host import Host

GRACE = 30  # seconds in-flight requests get to finish on shutdown

log = logging.getLogger("mmhost.api")


def config(host: Host) -> uvicorn.Config:
    s = host.settings
    return uvicorn.Config(
        create_app(host),
        host=s.host,
        port=s.port,
        log_level=s.log_level,
        access_log=s.log_level == "debug",
        timeout_graceful_shutdown=GRACE,
        server_header=False,
    )


def serve(host: Host) -> None:
    """Serve until SIGINT/SIGTERM, then close the host."""
    try:
        uvicorn.Server(config(host)).run()
    finally:
        host.close()


class ServerThread:
    """A real uvicorn server on a background thread. ``port=0`` in the settings picks a free
    port; ``url`` says which."""

    def __init__(self, host: Host, port: int | None = None) -> None:
        cfg = config(host)
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
