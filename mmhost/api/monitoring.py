"""What operators and scripts read: ``GET /metrics`` (Prometheus text format, see
``mmhost/metrics.py`` for every name) and ``GET /stats`` (JSON: the same numbers, the request
histograms summarized, and the ``top`` hottest resident models). Both need the
``mmhost:GetMetrics`` action when an auth config is in force (Prometheus sends an API key as
its bearer token)."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from mmhost.api.invocation import guarded, whole_number
from mmhost.errors import ValidationError
from mmhost.host import Host
from mmhost.metrics import CONTENT_TYPE
from mmhost.security.guard import METRICS

MAX_TOP = 1000


def routes(host: Host) -> list[BaseRoute]:
    async def metrics(request: Request) -> Response:
        await guarded(host, request, METRICS)
        return Response(await host.aprometheus(), media_type=CONTENT_TYPE)

    async def stats(request: Request) -> JSONResponse:
        await guarded(host, request, METRICS)
        top = request.query_params.get("top", "10")
        n = whole_number(top, MAX_TOP)
        if n is None:
            raise ValidationError(f"top must be a whole number 0..{MAX_TOP}, not {top[:32]!r}")
        return JSONResponse((await host.astats(n)).to_json())

    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
    ]
