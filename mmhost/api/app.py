"""``create_app(host)``: the HTTP face of a Host. Routes translate; the Host does the work."""

from __future__ import annotations

from fastapi import FastAPI

import mmhost
from mmhost.api import container, errors, sagemaker, v2
from mmhost.host import Host


def create_app(host: Host) -> FastAPI:
    """A FastAPI app over ``host``; the caller owns the host (and closes it)."""
    app = FastAPI(
        title="mmhost",
        version=mmhost.__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.host = host
    errors.install(app)
    app.include_router(sagemaker.router(host))
    app.include_router(container.router(host))
    app.include_router(v2.router(host))
    return app
