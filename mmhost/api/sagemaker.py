"""SageMaker runtime and container-contract invoke routes.

POST /endpoints/{endpoint}/invocations   what boto3's sagemaker-runtime client calls
POST /invocations                        what the platform calls on a container
GET  /ping                               container health
"""

from __future__ import annotations

from fastapi import Request, Response
from starlette.routing import BaseRoute, Route

from mmhost.api.invocation import guarded, invocation
from mmhost.errors import HostClosed, ValidationError
from mmhost.host import Host
from mmhost.security.guard import INVOKE, Caller
from mmhost.security.sigv4 import as_sent

TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"


def routes(host: Host) -> list[BaseRoute]:
    endpoint_name = host.settings.endpoint_name

    def endpoint_model(request: Request, _: Caller) -> str:
        endpoint = request.path_params["endpoint"]
        if endpoint != endpoint_name:
            raise ValidationError(f"Endpoint {endpoint} not found (this server is {endpoint_name})")
        return _target(request, endpoint)

    def container_model(request: Request, _: Caller) -> str:
        return _target(request, endpoint_name)

    async def invoke_endpoint(request: Request) -> Response:
        endpoint = request.path_params["endpoint"]
        g = await guarded(host, request, INVOKE, endpoint_model, endpoint=endpoint, loads=True)
        return await invocation(host, request, g)

    async def invocations(request: Request) -> Response:
        g = await guarded(host, request, INVOKE, container_model, loads=True)
        return await invocation(host, request, g)

    async def ping(request: Request) -> Response:
        if host.closed:
            raise HostClosed()
        return Response(b"", media_type="text/plain")

    return [
        Route("/endpoints/{endpoint}/invocations", invoke_endpoint, methods=["POST"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/ping", ping, methods=["GET"]),
    ]


def _target(request: Request, endpoint: str) -> str:
    target = request.headers.get(TARGET_MODEL)
    if target is None:
        raise ValidationError(
            f"Endpoint {endpoint} is a multi-model endpoint: the request is missing a target "
            f"model header ({TARGET_MODEL})"
        )
    text = as_sent(target)  # UTF-8, as boto3 sends it and SigV4 verification reads it
    if text is target and not target.isascii():
        raise ValidationError(f"the {TARGET_MODEL} header is not UTF-8 text")
    return text
