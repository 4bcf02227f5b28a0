"""Running the app under uvicorn, on the host's engine loop: in the foreground
(``mmhost serve``) or in the background (the demo, tests, benchmarks).

On SIGINT/SIGTERM readiness (``/v2/health/ready``) turns false, then (after ``drain_seconds``)
the server stops accepting, lets requests in flight finish (up to
``graceful_timeout_seconds``) and closes idle keep-alive connections, then the host is closed.
A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import signal
import time
from typing import Any

import uvicorn

from mmhost.api.app import create_app
from mmhost.api.http_limits import limited_protocol
from mmhost.host import Host
from mmhost.security import Guard

FREEZE_SECONDS = 30.0  # how often objects that became long-lived are frozen (see settle_gc)
GC_YOUNG_THRESHOLD = 50_000  # allocations between young collections while serving
_GC_DEFAULTS = gc.get_threshold()

log = logging.getLogger("mmhost.api")


def config(host: Host, app: Any = None, guard: Guard | None = None) -> uvicorn.Config:
    s = host.settings
    return uvicorn.Config(
        app or create_app(host, guard),
        host=s.bind_address,
        port=s.port,
        log_level=s.log_level,
        access_log=s.log_level == "debug",
        timeout_graceful_shutdown=s.graceful_timeout_seconds,  # type: ignore[arg-type]  # a float works
        log_config=None,  # uvicorn's lines go through mmhost's handler (text or JSON)
        server_header=False,
        http=limited_protocol(s.header_timeout_seconds, s.max_connections),
        timeout_keep_alive=s.keep_alive_timeout_seconds,  # type: ignore[arg-type]  # a float works
    )


def settle_gc(host: Host) -> concurrent.futures.Future[None]:
    """Take what is alive now (modules, models) out of the collector's view, now and then
    again every ``FREEZE_SECONDS``. Full collections otherwise walk every long-lived object
    (~110 ms for 1,000 resident models, longer with more) about once a second under load,
    stalling every request in flight. Cyclic garbage still young is collected first.
    The young generation's threshold is raised too: requests waiting for their batch hold
    objects alive, so under load the default (700) collected ~90 times per 1,000 requests and
    freed nothing. Cancel the returned future to stop; ``unsettle_gc`` hands everything back."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *_GC_DEFAULTS[1:])

    async def refreeze() -> None:
        while True:
            await asyncio.sleep(FREEZE_SECONDS)
            gc.collect(1)
            gc.freeze()

    return host.submit(refreeze())


def unsettle_gc(refreezing: concurrent.futures.Future[None]) -> None:
    refreezing.cancel()
    gc.set_threshold(*_GC_DEFAULTS)
    gc.unfreeze()  # so everything is collected (and finalised) normally from here on


def serve(host: Host, guard: Guard | None = None) -> None:
    """Serve until SIGINT/SIGTERM (requests in flight finish), then close the host.

    The server runs on the host's engine loop (see ``Host.submit``); this thread only waits
    and turns signals into uvicorn's exit flags (first: graceful stop; second: force)."""
    server = uvicorn.Server(config(host, guard=guard))
    drain = host.settings.drain_seconds
    stop_at: list[float] = []  # when the server is told to stop (after the drain)

    def on_signal(sig: int, frame: Any) -> None:
        if host.draining or not drain:  # a second signal, or no drain: uvicorn's own steps
            host.draining = True
            server.handle_exit(sig, frame)
            return
        host.draining = True
        log.info("draining: readiness is false; stopping in %.1f s", drain)
        stop_at.append(time.monotonic() + drain)

    original = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        done = host.submit(server.serve())
        refreezing = settle_gc(host)
        announced = False
        try:
            while True:  # a timed wait, so this (main) thread gets to run signal handlers
                if not announced and server.started:
                    announced = True
                    log.info("listening on %s", bound_url(server))
                if stop_at and time.monotonic() >= stop_at[0]:
                    stop_at.clear()
                    server.should_exit = True
                try:
                    done.result(timeout=0.1)
                    break
                except concurrent.futures.TimeoutError:
                    continue
        finally:
            unsettle_gc(refreezing)
    finally:
        for sig, handler in original.items():
            signal.signal(sig, handler)
        host.close()


def bound_url(server: uvicorn.Server) -> str:
    """The address a started server really listens on (``--port 0`` picks one)."""
    sock = server.servers[0].sockets[0]
    addr, port = sock.getsockname()[:2]
    return f"http://{addr}:{port}"


class ServerThread:
    """A real uvicorn server in the background, on the host's engine loop. ``port=0`` picks a
    free port; ``url`` says which. ``app``: serve this app (made by ``create_app(host)``)."""

    def __init__(self, host: Host, port: int | None = None, app: Any = None) -> None:
        cfg = config(host, app)
        if port is not None:
            cfg.port = port
        self.host = host
        self.server = uvicorn.Server(cfg)
        self._done: concurrent.futures.Future[None] | None = None
        self._refreezing: concurrent.futures.Future[None] | None = None

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._done = self.host.submit(self.server.serve())
        self._refreezing = settle_gc(self.host)
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if self._done.done() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start (see the log)")
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        return bound_url(self.server)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._done is not None and not self.host.closed:
            self._done.result(timeout=self.host.settings.graceful_timeout_seconds + 5)
        if self._refreezing is not None:
            unsettle_gc(self._refreezing)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
