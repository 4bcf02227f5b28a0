"""The one table from errors to responses.

SageMaker-family routes answer like the runtime: a JSON body with ``message`` and the code in the
``x-amzn-ErrorType`` header (botocore reads the code from there); a ModelError also carries
``OriginalStatusCode`` and ``OriginalMessage``. KServe V2 routes answer ``{"error": "..."}``.
A bug answers 500 InternalFailure without a stack trace (the trace goes to the log).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mmhost.api.invocation import CALLER
from mmhost.errors import MmhostError

log = logging.getLogger("mmhost.api")

# status of a Starlette HTTPException (unknown route, wrong method) -> runtime error code
_HTTP_CODES = {404: "UnknownOperationException", 405: "UnknownOperationException"}


def error_response(request: Request, status: int, code: str, message: str) -> JSONResponse:
    caller = request.scope.get(CALLER)
    if caller is not None:  # a failed signed request may be sent again as it was
        request.app.state.guard.forget(caller)
    request.app.state.host.metrics.error(status, code)
    if request.url.path.startswith("/v2"):
        return JSONResponse({"error": message}, status)
    body: dict[str, object] = {"message": message}
    if code == "ModelError":
        body |= {"OriginalStatusCode": 500, "OriginalMessage": message}
    return JSONResponse(body, status, headers={"x-amzn-ErrorType": code})


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

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(
            request, 500, "InternalFailure", "internal error; the server log has the details"
        )
