"""KServe V2 / Open Inference Protocol (REST), with the model repository extension.

Model names may contain ``/`` (they are store keys). A model is *ready* when it is loaded
(device or host tier); ``infer`` loads a model on first use anyway, and
``/v2/repository/models/{name}/load`` loads one ahead of time.

Routes as Triton's clients call them: every model route also under ``/versions/{v}`` (one
version is served: the store's current one, which the metadata lists; another is a 404), the
model configuration (``/config``) and the statistics extension (``/stats``, per model or for
all loaded ones, since each was placed on the device). So ``/versions/...``, ``/ready``,
``/infer``, ``/config`` and ``/stats`` at the end of a path are these routes, never part of a
model's name.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Route

import mmhost
from mmhost.api.invocation import guarded, overhead
from mmhost.codecs import outputs, v2, v2_models
from mmhost.codecs.documents import parse_json
from mmhost.codecs.limits import DecodeLimits
from mmhost.errors import (
    HostClosed,
    ModelInUse,
    ModelNotLoaded,
    ValidationError,
    VersionNotAvailable,
)
from mmhost.host import Host
from mmhost.security.guard import DESCRIBE, INVOKE, LIST, LOAD, UNLOAD


def routes(host: Host) -> list[BaseRoute]:
    async def server_metadata(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "name": "mmhost",
                "version": mmhost.__version__,
                "extensions": ["model_repository", "statistics", "model_configuration"],
            }
        )

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> JSONResponse:
        if host.closed:
            raise HostClosed()
        if host.draining:  # stopping: a load balancer should send elsewhere
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True})

    async def model_ready(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        await guarded(host, request, DESCRIBE, name)
        usage = await host.ausage(name)
        if not usage:
            raise ModelNotLoaded(name)
        _check_version(request, usage[0].version)
        return JSONResponse({"name": name, "ready": True})

    async def infer(request: Request) -> Response:
        name = request.path_params["name"]
        body = (await guarded(host, request, INVOKE, name, loads=True)).body
        limits = DecodeLimits.of(host.settings)
        doc, rows = v2.parse_request(body, request.headers.get(v2.HEADER_LENGTH), limits)
        requested = doc.get("outputs")
        limit = host.settings.max_response_bytes
        if "version" in request.path_params:
            _check_version(request, (await host.aload(name)).version)
        p = await host.aprediction(name, rows, limit)
        if p.neighbors is not None:
            answer = v2.neighbor_outputs(p.scores, p.neighbors, p.classes, limit)
        else:
            answer = v2.outputs(p.scores, p.task, p.classes, p.threshold)
        tensors = v2.select(answer, requested)
        overhead(host, request, p)
        head: dict[str, Any] = {"model_name": name, "id": str(doc.get("id", ""))}
        binary = v2.wants_binary(doc, requested)
        if not binary:
            body = v2.render(head, tensors)
            outputs.check_size(body, p.scores.shape, limit)
            return Response(body, media_type="application/json")
        moved, tail = v2.encode_binary(tensors, binary)
        raw = v2.render(head, moved, ascii_only=True)
        outputs.check_size(raw + tail, p.scores.shape, limit)
        return Response(
            raw + tail,
            media_type="application/octet-stream",
            headers={v2.HEADER_LENGTH: str(len(raw))},
        )

    async def model_metadata(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        await guarded(host, request, DESCRIBE, name, loads=True)
        info = await host.aload(name)
        _check_version(request, info.version)
        return JSONResponse(v2_models.metadata(info))

    async def model_config(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        await guarded(host, request, DESCRIBE, name, loads=True)
        info = await host.aload(name)
        _check_version(request, info.version)
        return JSONResponse(v2_models.config(info, host.settings.max_rows_per_request))

    async def statistics(request: Request) -> JSONResponse:
        name = request.path_params.get("name")
        await guarded(host, request, DESCRIBE if name else LIST, name)
        usage = await host.ausage(name)
        if name is not None:
            if not usage:
                raise ModelNotLoaded(name)
            _check_version(request, usage[0].version)
        return JSONResponse(v2_models.statistics(usage))

    async def index(request: Request) -> JSONResponse:
        body = (await guarded(host, request, LIST)).body
        ready_only = _index_request(body)
        loaded = await host.alist_models()
        names = sorted(loaded) if ready_only else await host.astore_keys()
        return JSONResponse(v2_models.index(names, loaded))

    async def load(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        await guarded(host, request, LOAD, name, loads=True)
        await host.aload(name)
        return JSONResponse({})

    async def unload(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        await guarded(host, request, UNLOAD, name)
        if held := host.names.holders(name):  # one registry: the container's names hold it
            raise ModelInUse(name, held)
        if not await host.aunload(name):
            raise ModelNotLoaded(name)
        return JSONResponse({})

    model_routes = [
        ("/ready", model_ready, "GET"),
        ("/infer", infer, "POST"),
        ("/config", model_config, "GET"),
        ("/stats", statistics, "GET"),
        ("", model_metadata, "GET"),
    ]
    return [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/stats", statistics, methods=["GET"]),
        *[
            Route(f"/v2/models/{{name:path}}/versions/{{version}}{tail}", fn, methods=[method])
            for tail, fn, method in model_routes
        ],
        *[
            Route(f"/v2/models/{{name:path}}{tail}", fn, methods=[method])
            for tail, fn, method in model_routes
        ],
        Route("/v2/repository/index", index, methods=["POST"]),
        Route("/v2/repository/models/{name:path}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{name:path}/unload", unload, methods=["POST"]),
    ]


def _check_version(request: Request, served: str) -> None:
    asked = request.path_params.get("version")
    if asked is not None and asked != served:
        raise VersionNotAvailable(request.path_params["name"], asked, served)


def _index_request(body: bytes) -> bool:
    if not body.strip():
        return False
    doc = parse_json(body, "the index request")
    if not isinstance(doc, dict) or not isinstance(doc.get("ready", False), bool):
        raise ValidationError('expected a JSON body such as {"ready": true}')
    return bool(doc.get("ready", False))
