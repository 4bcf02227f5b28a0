"""The request path every route shares, in three short functions:

admit:       authenticate from the head -> read the body (bounded in size, time and bytes
             in flight) -> finish authenticating (SigV4 signs the body) -> rate-limit
guarded:     admit -> authorize the action on its target (every guarded route's first line)
invocation:  decode rows (codecs) -> infer (host: cache, batcher, fused op) -> encode
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request, Response
from starlette.requests import ClientDisconnect

from mmhost.codecs import inputs, media, outputs
from mmhost.codecs.limits import DecodeLimits
from mmhost.errors import (
    BodyTimeout,
    ClientDisconnected,
    PayloadTooLarge,
    ServerBusy,
    ValidationError,
)
from mmhost.host import Host
from mmhost.security import Guard
from mmhost.security.guard import Caller
from mmhost.types import Prediction

PRODUCTION_VARIANT = "AllTraffic"
# per-request values kept in the ASGI scope (cheaper than Starlette's request.state)
STARTED = "mmhost.started"
CALLER = "mmhost.caller"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
_MAX_CUSTOM_ATTRIBUTES = 1024


class BodyBudget:
    """Bytes of request bodies being received now, all clients together, against a limit.
    Touched on the server's loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0

    def take(self, n: int) -> None:
        if n and self.inflight + n > self.limit:
            raise ServerBusy(n, self.inflight, self.limit)
        self.inflight += n

    def give(self, n: int) -> None:
        self.inflight -= n


async def read_body(
    request: Request, limit: int, timeout: float = 30.0, budget: BodyBudget | None = None
) -> bytes:
    """The whole body: refused (413) as soon as it passes ``limit`` bytes, (408) when it has
    not all come within ``timeout`` seconds, (503) when ``budget`` can't hold it (by its
    Content-Length, or as it arrives when it has none)."""
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isascii() and declared.isdigit() else None
    if size is not None and size > limit:
        raise PayloadTooLarge(size, limit)
    budget = budget or BodyBudget(limit)
    held = size or 0
    budget.take(held)
    chunks, got = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                got += len(chunk)
                if got > limit:
                    raise PayloadTooLarge(None, limit)
                if got > held:  # no (or a short) Content-Length: hold what has come
                    budget.take(got - held)
                    held = got
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(got, timeout) from None
    except ClientDisconnect:
        raise ClientDisconnected() from None
    finally:
        budget.give(held)
    return b"".join(chunks)


async def admit(host: Host, request: Request) -> tuple[bytes, Caller]:
    """The body, and who sent it (NotAuthenticated, Throttled). Every guarded route starts
    here, before it looks at anything the caller sent: a caller without valid credentials is
    refused from the head alone (an API key fully, SigV4 up to its signature), before its
    body is read."""
    scope = request.scope
    scope[STARTED] = time.perf_counter()
    guard: Guard = request.app.state.guard
    early = guard.admit_head(request)
    s = host.settings
    body = await read_body(
        request, s.max_body_bytes, s.body_timeout_seconds, request.app.state.bodies
    )
    caller = early or guard.authenticate(request, body)
    scope[CALLER] = caller  # the error handler lets a failed request be retried
    return body, caller


@dataclass(frozen=True)
class Admitted:
    """A guarded request let through: its body, its caller, and the target it was authorized
    on."""

    body: bytes
    caller: Caller
    target: str | None

    @property
    def model(self) -> str:
        """The target of an action on one model (its route always names one)."""
        if self.target is None:
            raise TypeError("this action was authorized on no model")
        return self.target


Target = str | Callable[[Request, Caller], str | None] | None
"""What an action is authorized on: a name, none (the server), or how to read it from the
request once the caller is known (a header, or a container name in the caller's namespace)."""


async def guarded(
    host: Host,
    request: Request,
    action: str,
    target: Target = None,
    *,
    endpoint: str | None = None,
    loads: bool = False,
) -> Admitted:
    """Every guarded route's first step: ``admit`` (who, within limits), then read ``target``
    and ``authorize`` ``action`` on it (on ``endpoint``, by default this server's)."""
    body, caller = await admit(host, request)
    name = target(request, caller) if callable(target) else target
    await authorize(host, request, caller, action, name, endpoint, loads=loads)
    return Admitted(body, caller, name)


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
    if loads and target is not None:
        await charge_cold_load(host, request, caller, target)


async def charge_cold_load(host: Host, request: Request, caller: Caller, target: str) -> None:
    """Count loading ``target`` against the caller's cold-load limit (Throttled) if it is cold.
    The load is charged, not its waiters: nothing when it is loaded or already loading."""
    guard: Guard = request.app.state.guard
    if caller.open or not guard.limits_cold_loads(caller):
        return
    if await host.atier(target) is None and not await host.aloading(target):
        guard.admit_cold_load(caller, target)


async def invocation(host: Host, request: Request, admitted: Admitted) -> Response:
    """An authorized invoke's work (``guarded`` first): decode, predict, encode."""
    body, target = admitted.body, admitted.model
    headers = request.headers
    accept = media.response_type(headers.get("accept"))
    reply = _reply_headers(headers.get(CUSTOM_ATTRIBUTES))
    media_type = media.request_type(headers.get("content-type"), body)
    rows = inputs.decode(body, media_type, DecodeLimits.of(host.settings))
    limit = host.settings.max_response_bytes
    prediction = await host.aprediction(target, rows, limit)
    answer = outputs.encode(prediction, accept, limit, media.verbose(headers.get("accept")))
    response = Response(answer, media_type=accept, headers=reply)
    overhead(host, request, prediction)
    return response


def overhead(host: Host, request: Request, p: Prediction) -> None:
    """Record the request's time outside its model and its load (OverheadLatency)."""
    spent = time.perf_counter() - request.scope[STARTED]
    host.metrics.overhead(max(0.0, spent - p.model_seconds - p.wait_seconds))


def whole_number(text: str, most: int) -> int | None:
    """``text`` as an int 0..``most`` (a query parameter), else None: ASCII digits only
    ("²".isdigit() is true, int("²") fails) and no more of them than ``most`` has."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(most)):
        return None
    n = int(text)
    return n if n <= most else None


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
