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

import json
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Route

import mmhost
from mmhost.api.invocation import admit, authorize, overhead
from mmhost.cache import ModelUsage
from mmhost.codecs import outputs, v2
from mmhost.codecs.documents import parse_json
from mmhost.codecs.limits import DecodeLimits
from mmhost.errors import HostClosed, ModelNotLoaded, ValidationError, VersionNotAvailable
from mmhost.host import Host
from mmhost.security.guard import DESCRIBE, INVOKE, LIST, LOAD, UNLOAD

_TYPES = {"float": "FP32", "category": "BYTES"}
# V2 datatypes as a Triton model configuration spells them
_CONFIG_TYPES = {
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "INT64": "TYPE_INT64",
    "BYTES": "TYPE_STRING",
}


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
        _, caller = await admit(host, request)
        name = request.path_params["name"]
        await authorize(host, request, caller, DESCRIBE, name)
        usage = await host.ausage(name)
        if not usage:
            raise ModelNotLoaded(name)
        _check_version(request, usage[0].version)
        return JSONResponse({"name": name, "ready": True})

    async def infer(request: Request) -> Response:
        body, caller = await admit(host, request)
        name = request.path_params["name"]
        await authorize(host, request, caller, INVOKE, name, loads=True)
        limits = DecodeLimits.of(host.settings)
        doc, rows = v2.parse_request(body, request.headers.get(v2.HEADER_LENGTH), limits)
        requested = doc.get("outputs")
        limit = host.settings.max_response_bytes
        if "version" in request.path_params:
            _check_version(request, (await host.aload(name))["version"])
        p = await host.infer(name, rows, limit)
        if p.neighbors is not None:
            answer = v2.neighbor_outputs(p.scores, p.neighbors, p.classes, limit)
        else:
            answer = v2.outputs(p.scores, p.task, p.classes, p.threshold)
        tensors = v2.select(answer, requested)
        overhead(host, request, p)
        head: dict[str, Any] = {"model_name": name, "id": str(doc.get("id", "")), "outputs": []}
        binary = v2.wants_binary(doc, requested)
        if not binary:
            head["outputs"] = tensors
            response = JSONResponse(head)
            outputs.check_size(response.body, p.scores.shape, limit)
            return response
        head["outputs"], tail = v2.encode_binary(tensors, binary)
        raw = json.dumps(head, separators=(",", ":")).encode()
        outputs.check_size(raw + tail, p.scores.shape, limit)
        return Response(
            raw + tail,
            media_type="application/octet-stream",
            headers={v2.HEADER_LENGTH: str(len(raw))},
        )

    async def model_metadata(request: Request) -> JSONResponse:
        _, caller = await admit(host, request)
        name = request.path_params["name"]
        await authorize(host, request, caller, DESCRIBE, name, loads=True)
        info = await host.aload(name)
        _check_version(request, info["version"])
        return JSONResponse(_metadata(info))

    async def model_config(request: Request) -> JSONResponse:
        _, caller = await admit(host, request)
        name = request.path_params["name"]
        await authorize(host, request, caller, DESCRIBE, name, loads=True)
        info = await host.aload(name)
        _check_version(request, info["version"])
        return JSONResponse(_config(_metadata(info), host.settings.max_rows_per_request))

    async def statistics(request: Request) -> JSONResponse:
        _, caller = await admit(host, request)
        name = request.path_params.get("name")
        await authorize(host, request, caller, DESCRIBE if name else LIST, name)
        usage = await host.ausage(name)
        if name is not None:
            if not usage:
                raise ModelNotLoaded(name)
            _check_version(request, usage[0].version)
        return JSONResponse({"model_stats": [_statistics(u) for u in usage]})

    async def index(request: Request) -> JSONResponse:
        body, caller = await admit(host, request)
        await authorize(host, request, caller, LIST)
        ready_only = _index_request(body)
        loaded = await host.alist_models()
        names = sorted(loaded) if ready_only else await host.astore_keys()
        return JSONResponse(
            [
                {
                    "name": n,
                    "version": "",
                    "state": "READY" if n in loaded else "UNAVAILABLE",
                    "reason": "",
                }
                for n in names
            ]
        )

    async def load(request: Request) -> JSONResponse:
        _, caller = await admit(host, request)
        name = request.path_params["name"]
        await authorize(host, request, caller, LOAD, name, loads=True)
        await host.aload(name)
        return JSONResponse({})

    async def unload(request: Request) -> JSONResponse:
        _, caller = await admit(host, request)
        name = request.path_params["name"]
        await authorize(host, request, caller, UNLOAD, name)
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


def _metadata(info: dict[str, Any]) -> dict[str, Any]:
    k = info["outputs"]
    outputs: list[dict[str, Any]]
    if info["family"] == "knn":  # answered as SageMaker's k-NN (codecs/v2.neighbor_outputs)
        label = "FP32" if info["classes"] is None else v2.label_type(info["classes"])
        outputs = [
            {"name": "predicted_label", "datatype": label, "shape": [-1]},
            {"name": "labels", "datatype": label, "shape": [-1, -1]},
            {"name": "distances", "datatype": "FP32", "shape": [-1, -1]},
        ]
    else:
        outputs = _score_outputs(info, k)
    return {
        "name": info["name"],
        "versions": [info["version"]],
        "platform": "mmhost",
        "inputs": [
            {"name": c["name"], "datatype": _TYPES[c["type"]], "shape": [-1]}
            for c in info["inputs"]
        ],
        "outputs": outputs,
        "parameters": {"task": info["task"]},
    }


def _check_version(request: Request, served: str) -> None:
    asked = request.path_params.get("version")
    if asked is not None and asked != served:
        raise VersionNotAvailable(request.path_params["name"], asked, served)


def _config(meta: dict[str, Any], max_batch: int) -> dict[str, Any]:
    """A Triton model configuration from the metadata: every tensor's first axis is the
    batch (rows), so ``dims`` are the rest."""

    def tensors(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "name": t["name"],
                "data_type": _CONFIG_TYPES.get(t["datatype"], "TYPE_STRING"),
                "dims": t["shape"][1:] or [1],
            }
            for t in items
        ]

    return {
        "name": meta["name"],
        "platform": meta["platform"],
        "backend": "mmhost",
        "max_batch_size": max_batch,
        "input": tensors(meta["inputs"]),
        "output": tensors(meta["outputs"]),
        "parameters": {k: {"string_value": str(v)} for k, v in meta["parameters"].items()},
    }


def _statistics(u: ModelUsage) -> dict[str, Any]:
    """The statistics extension's entry for one model: requests are inferences and
    executions alike (a request's rows are scored together), its op time the compute."""
    ns = int(u.infer_seconds * 1e9)
    nothing = {"count": 0, "ns": 0}
    return {
        "name": u.name,
        "version": u.version,
        "last_inference": int(u.last_used * 1000),
        "inference_count": u.rows,
        "execution_count": u.requests,
        "inference_stats": {
            "success": {"count": u.requests, "ns": ns},
            "fail": nothing,
            "queue": nothing,
            "compute_input": nothing,
            "compute_infer": {"count": u.requests, "ns": ns},
            "compute_output": nothing,
            "cache_hit": nothing,
            "cache_miss": nothing,
        },
        "batch_stats": [],
    }


def _score_outputs(info: dict[str, Any], k: int) -> list[dict[str, Any]]:
    outputs = [
        {
            "name": "score",
            "datatype": "FP32",
            "shape": [-1, k] if info["task"] == "multiclass_classifier" else [-1],
        }
    ]
    if info["classes"] is not None:
        label_type = v2.label_type(info["classes"])
        outputs.append({"name": "predicted_label", "datatype": label_type, "shape": [-1]})
    return outputs


def _index_request(body: bytes) -> bool:
    if not body.strip():
        return False
    doc = parse_json(body, "the index request")
    if not isinstance(doc, dict) or not isinstance(doc.get("ready", False), bool):
        raise ValidationError('expected a JSON body such as {"ready": true}')
    return bool(doc.get("ready", False))
