"""The engine's event loop on its own thread, and the bridge to it from anywhere else.

Everything that touches the cache and the batcher runs on this one loop (the HTTP server too,
see ``api/server.py``), so they need no locks. ``run`` is for sync callers on other threads,
``on_engine`` for coroutines on another event loop, ``submit`` hands a coroutine over."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from mmhost.errors import HostClosed

T = TypeVar("T")


class EngineLoop:
    def __init__(self) -> None:
        self.loop = new_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="mmhost-engine", daemon=True
        )
        self.thread.start()
        self.closed = False

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the loop; HostClosed once closed."""
        if self.closed:
            coro.close()
            raise HostClosed()
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for it (from any thread but the loop's own)."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "sync Host calls can't be made from the engine loop; await host.apredict instead"
            )
        return self.submit(coro).result(timeout)

    async def on_engine(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the loop from any event loop (directly when already on it)."""
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def close(self) -> None:
        """Cancel what still runs there (requests in flight end with CancelledError instead of
        waiting forever), stop the loop and its thread."""
        if self.closed:
            return
        self.closed = True
        asyncio.run_coroutine_threadsafe(_cancel_all(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


async def call(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` as a coroutine: a plain call run on the loop's thread."""
    return fn(*args)


async def _cancel_all() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it comes with uvicorn[standard]): the HTTP server shares this
    loop, and uvloop's I/O costs a fraction of asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
