"""Every request gets an id, echoed in ``x-amzn-RequestId`` (as the SageMaker runtime does) and
put on ``request.state.request_id``; at debug level each request is logged as one line (method,
path, status, milliseconds, target model, request id)."""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

log = logging.getLogger("mmhost.requests")
HEADER = b"x-amzn-requestid"
_TARGET = b"x-amzn-sagemaker-target-model"


class RequestIds:
    """Pure ASGI middleware (a Starlette ``BaseHTTPMiddleware`` would cost a task a request)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.prefix = os.urandom(4).hex() + "-"  # ids stay unique across restarts
        self.counter = itertools.count(1)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = f"{self.prefix}{next(self.counter):08x}"
        scope.setdefault("state", {})["request_id"] = rid
        header = (HEADER, rid.encode())
        status = 0

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        if not log.isEnabledFor(logging.DEBUG):
            await self.app(scope, receive, send_with_id)
            return
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            ms = (time.perf_counter() - t0) * 1e3
            raw = dict(scope.get("headers", ())).get(_TARGET, b"")
            target = raw.decode("utf-8", errors="replace") or None
            log.debug(
                "%s %s -> %d in %.2f ms (request %s)",
                scope["method"],
                scope["path"],
                status,
                ms,
                rid,
                extra={
                    "fields": {
                        "request_id": rid,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(ms, 3),
                        "target_model": target,
                    }
                },
            )
