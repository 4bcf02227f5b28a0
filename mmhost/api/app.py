"""``create_app(host)``: the HTTP face of a Host. Routes translate; the Host does the work."""

from __future__ import annotations

from fastapi import FastAPI

import mmhost
from mmhost.api import container, docs, errors, monitoring, sagemaker, v2
from mmhost.api.invocation import BodyBudget
from mmhost.api.request_ids import RequestIds
from mmhost.host import Host
from mmhost.security import Guard


def create_app(host: Host, guard: Guard | None = None) -> FastAPI:
    """A FastAPI app over ``host``; the caller owns the host (and closes it). ``guard``: who
    may call (default: from the host's settings: ``auth_config`` and the limits)."""
    # Plain Starlette routes, each taking the request: FastAPI's dependency solving and
    # included-router dispatch cost more per request than decoding and scoring a row.
    served = [
        *sagemaker.routes(host),
        *container.routes(host),
        *v2.routes(host),
        *monitoring.routes(host),
    ]
    if host.settings.docs:  # FastAPI's own docs see none of these plain routes: ours do
        served += docs.routes(host, served)
    app = FastAPI(
        title="mmhost",
        version=mmhost.__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        routes=served,
    )
    app.state.host = host
    app.state.guard = guard or Guard.from_settings(host.settings)
    app.state.bodies = BodyBudget(host.settings.max_inflight_body_bytes)
    errors.install(app)
    app.add_middleware(errors.CatchAll)
    app.add_middleware(RequestIds)  # outermost: a 500 carries its request id too
    return app
