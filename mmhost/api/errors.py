"""The one table from errors to responses.

SageMaker-family routes answer like the runtime: a JSON body with ``message`` and the code in the
``x-amzn-ErrorType`` header (botocore reads the code from there); a ModelError also carries
``OriginalStatusCode`` and ``OriginalMessage``. KServe V2 routes answer ``{"error": "..."}``.
A bug answers 500 InternalFailure without a stack trace (the trace goes to the log) and
``Connection: close``: the connection is closed cleanly after the answer, never reset.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mmhost.api.invocation import CALLER
from mmhost.errors import MmhostError

log = logging.getLogger("mmhost.api")

# status of a Starlette HTTPException (unknown route, wrong method) -> runtime error code
_HTTP_CODES = {404: "UnknownOperationException", 405: "UnknownOperationException"}


def error_response(
    request: Request, status: int, code: str, message: str, close: bool = False
) -> JSONResponse:
    caller = request.scope.get(CALLER)
    if caller is not None:  # a failed signed request may be sent again as it was
        request.app.state.guard.forget(caller)
    request.app.state.host.metrics.error(status, code)
    headers = {"connection": "close"} if close else {}
    if request.url.path.startswith("/v2"):
        return JSONResponse({"error": message}, status, headers=headers)
    body: dict[str, object] = {"message": message}
    if code == "ModelError":
        body |= {"OriginalStatusCode": 500, "OriginalMessage": message}
    return JSONResponse(body, status, headers={"x-amzn-ErrorType": code, **headers})


class CatchAll:
    """Pure ASGI middleware: a bug becomes a 500 with ``Connection: close`` and one logged
    traceback. (Starlette's own handler for ``Exception`` re-raises after answering, so uvicorn
    logs the trace again and resets the kept-alive connection.)"""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            request = Request(scope)
            log.exception("internal error on %s %s", request.method, request.url.path)
            if started:  # half an answer is out: only closing the connection is left
                raise
            message = "internal error; the server log has the details"
            response = error_response(request, 500, "InternalFailure", message, close=True)
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    @app.exception_handler(MmhostError)
    async def _mmhost(request: Request, exc: MmhostError) -> JSONResponse:
        log.debug(
            "%s %s -> %d %s: %s",
            request.method,
            request.url.path,
            exc.status,
            exc.code,
            exc.message,
        )
        return error_response(request, exc.status, exc.code, exc.message)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "ValidationError")
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(request, exc.status_code, code, message)
