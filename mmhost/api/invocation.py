"""The request path every route shares, in two short functions:

admit:       read the body -> authenticate (and rate-limit) the caller
invocation:  authorize the target -> decode rows (codecs) -> infer (host: cache, batcher,
             fused op) -> encode
"""

from __future__ import annotations

import time

from fastapi import Request, Response

from mmhost.codecs import inputs, media, outputs
from mmhost.errors import PayloadTooLarge, ValidationError
from mmhost.host import Host, Prediction
from mmhost.security import Guard
from mmhost.security.guard import INVOKE, Caller

PRODUCTION_VARIANT = "AllTraffic"
# per-request values kept in the ASGI scope (cheaper than Starlette's request.state)
STARTED = "mmhost.started"
CALLER = "mmhost.caller"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
_MAX_CUSTOM_ATTRIBUTES = 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(None, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def admit(host: Host, request: Request) -> tuple[bytes, Caller]:
    """The body, and who sent it (NotAuthenticated, Throttled). Every guarded route starts
    here, before it looks at anything the caller sent."""
    scope = request.scope
    scope[STARTED] = time.perf_counter()
    body = await read_body(request, host.settings.max_body_bytes)
    guard: Guard = request.app.state.guard
    caller = guard.authenticate(request, body)
    scope[CALLER] = caller  # the error handler lets a failed request be retried
    return body, caller


async def authorize(
    host: Host,
    request: Request,
    caller: Caller,
    action: str,
    target: str | None = None,
    endpoint: str | None = None,
    loads: bool = False,
) -> None:
    """May ``caller`` do ``action`` on ``target`` (AccessDenied)? ``loads``: the action loads
    ``target`` if it is cold, which counts against the caller's cold-load limit (Throttled)."""
    if caller.open:
        return
    guard: Guard = request.app.state.guard
    guard.authorize(caller, action, target, endpoint or host.settings.endpoint_name)
    if loads and target is not None and guard.limits_cold_loads(caller):
        if await host.atier(target) is None:
            guard.admit_cold_load(caller, target)


async def invocation(
    host: Host, request: Request, body: bytes, caller: Caller, target: str, endpoint: str
) -> Response:
    if not caller.open:  # an open server allows everything: skip the policy machinery
        await authorize(host, request, caller, INVOKE, target, endpoint, loads=True)
    headers = request.headers
    accept = media.response_type(headers.get("accept"))
    reply = _reply_headers(headers.get(CUSTOM_ATTRIBUTES))
    rows = inputs.decode(body, media.request_type(headers.get("content-type"), body))
    prediction = await host.infer(target, rows)
    response = Response(outputs.encode(prediction, accept), media_type=accept, headers=reply)
    overhead(host, request, prediction)
    return response


def overhead(host: Host, request: Request, p: Prediction) -> None:
    """Record the request's time outside its model and its load (OverheadLatency)."""
    spent = time.perf_counter() - request.scope[STARTED]
    host.metrics.overhead(max(0.0, spent - p.model_seconds - p.wait_seconds))


def _reply_headers(custom: str | None) -> dict[str, str]:
    reply = {"x-Amzn-Invoked-Production-Variant": PRODUCTION_VARIANT}
    if custom is not None:
        if len(custom) > _MAX_CUSTOM_ATTRIBUTES:
            raise ValidationError(
                f"{CUSTOM_ATTRIBUTES} is {len(custom)} characters; the limit is "
                f"{_MAX_CUSTOM_ATTRIBUTES}"
            )
        reply[CUSTOM_ATTRIBUTES] = custom  # passed back as the runtime does
    return reply
