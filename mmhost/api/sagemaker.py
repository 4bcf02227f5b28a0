"""SageMaker runtime and container-contract invoke routes.

POST /endpoints/{endpoint}/invocations   what boto3's sagemaker-runtime client calls
POST /invocations                        what the platform calls on a container
GET  /ping                               container health
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from mmhost.api.invocation import invocation
from mmhost.errors import HostClosed, ValidationError
from mmhost.host import Host

TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"


def router(host: Host) -> APIRouter:
    r = APIRouter()
    endpoint_name = host.settings.endpoint_name

    # the invoke routes are plain Starlette routes: FastAPI's dependency solving would cost
    # more than decoding the row (they take nothing but the request)
    async def invoke_endpoint(request: Request) -> Response:
        endpoint = request.path_params["endpoint"]
        if endpoint != endpoint_name:
            raise ValidationError(f"Endpoint {endpoint} not found (this server is {endpoint_name})")
        return await invocation(host, _target(request, endpoint), request)

    async def invocations(request: Request) -> Response:
        return await invocation(host, _target(request, endpoint_name), request)

    r.add_route("/endpoints/{endpoint}/invocations", invoke_endpoint, methods=["POST"])
    r.add_route("/invocations", invocations, methods=["POST"])

    @r.get("/ping")
    async def ping() -> Response:
        if host.closed:
            raise HostClosed()
        return Response(b"", media_type="text/plain")

    return r


def _target(request: Request, endpoint: str) -> str:
    target = request.headers.get(TARGET_MODEL)
    if target is None:
        raise ValidationError(
            f"Endpoint {endpoint} is a multi-model endpoint: the request is missing a target "
            f"model header ({TARGET_MODEL})"
        )
    return target
