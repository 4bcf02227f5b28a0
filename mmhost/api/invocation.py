"""The request path every invoke route shares, in one short function:

    read the body -> decode rows (codecs) -> infer (host: cache, batcher, fused op) -> encode

Authorization (issue: security) plugs in between decoding and inference.
"""

from __future__ import annotations

from fastapi import Request, Response

from mmhost.codecs import inputs, media, outputs
from mmhost.errors import PayloadTooLarge, ValidationError
from mmhost.host import Host

PRODUCTION_VARIANT = "AllTraffic"
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


async def invocation(host: Host, target: str, request: Request) -> Response:
    body = await read_body(request, host.settings.max_body_bytes)
    headers = request.headers
    accept = media.response_type(headers.get("accept"))
    reply = _reply_headers(headers.get(CUSTOM_ATTRIBUTES))
    rows = inputs.decode(body, media.request_type(headers.get("content-type"), body))
    prediction = await host.infer(target, rows)
    return Response(outputs.encode(prediction, accept), media_type=accept, headers=reply)


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
