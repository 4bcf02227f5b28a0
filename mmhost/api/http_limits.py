"""What uvicorn's httptools protocol does not bound, bounded: a request head's size and time,
the number of open connections, and a body the server stopped reading.

- head size: past ``MAX_HEADER_BYTES`` the client gets 431 and the connection is closed, whether
  the head is complete or still arriving (so it is never buffered unbounded);
- head time: a head not complete ``header_timeout_seconds`` seconds after the connection opened (or
  after the request's first byte, on a kept-alive connection) gets 408 and the connection is
  closed, so a client sending a byte every few seconds can't hold a connection (slowloris);
- connections: one past ``max_connections`` is answered 503 and closed at once, before it
  can hold a file descriptor that legitimate clients need;
- a response sent before its request's body was all received (a refused request) closes the
  connection: the rest of that body is not read, however slowly it comes.

The keep-alive idle timeout is uvicorn's own (``timeout_keep_alive``, from the settings).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024


def _reply(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(text) + text
    )


_TOO_LARGE = _reply(b"431 Request Header Fields Too Large", b"Request header fields too large\n")
_TOO_SLOW = _reply(b"408 Request Timeout", b"The request head did not arrive in time\n")
_TOO_MANY = _reply(b"503 Service Unavailable", b"Too many open connections; retry\n")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_seconds: float = 5.0  # seconds (see ``limited_protocol``)
    max_connections: int = 1000

    def connection_made(self, transport: Any) -> None:
        self._head_bytes, self._in_head = 0, True
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(_TOO_MANY)
            return
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        self._head_bytes, self._in_head = 0, True
        self._start_head_timer()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        if len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers) > MAX_HEADER_BYTES:
            self._refuse(_TOO_LARGE)
            raise ValueError("request head too large")  # stops the parser: no request starts
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEADER_BYTES:  # a head still arriving
            self._refuse(_TOO_LARGE)

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            self.transport.close()  # answered before its body came: don't read the rest
        super().on_response_complete()

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.header_timeout_seconds, self._head_too_slow
            )

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and self.timeout_keep_alive_task is None:
            self._refuse(_TOO_SLOW)

    def _refuse(self, reply: bytes) -> None:
        self._stop_head_timer()
        if not self.transport.is_closing():
            self.transport.write(reply)
            self.transport.close()


def limited_protocol(
    header_timeout_seconds: float, max_connections: int
) -> type[HttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with these limits."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {"header_timeout_seconds": header_timeout_seconds, "max_connections": max_connections},
    )
