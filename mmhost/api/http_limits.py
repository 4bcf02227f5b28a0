"""A limit on the size of a request's head (request line + headers), which uvicorn's httptools
protocol does not have: past ``MAX_HEADER_BYTES`` the client gets 431 and the connection is
closed, whether the head is complete or still arriving (so it is never buffered unbounded)."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: 32\r\n\r\n"
    b"Request header fields too large\n"
)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: Any) -> None:
        self._head_bytes, self._in_head = 0, True
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        self._head_bytes, self._in_head = 0, True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        if len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers) > MAX_HEADER_BYTES:
            self._refuse()
            raise ValueError("request head too large")  # stops the parser: no request starts
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEADER_BYTES:  # a head still arriving
            self._refuse()

    def _refuse(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(_TOO_LARGE)
            self.transport.close()
