"""KServe V2 / Open Inference Protocol (REST), with the model repository extension.

Model names may contain ``/`` (they are store keys). A model is *ready* when it is loaded
(device or host tier); ``infer`` loads a model on first use anyway, and
``/v2/repository/models/{name}/load`` loads one ahead of time.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Route

import mmhost
from mmhost.api.invocation import admit, authorize, overhead
from mmhost.codecs import outputs, v2
from mmhost.codecs.documents import parse_json
from mmhost.codecs.limits import DecodeLimits
from mmhost.errors import HostClosed, ModelNotLoaded, ValidationError
from mmhost.host import Host
from mmhost.security.guard import DESCRIBE, INVOKE, LIST, LOAD, UNLOAD

_TYPES = {"float": "FP32", "category": "BYTES"}


def routes(host: Host) -> list[BaseRoute]:
    async def server_metadata(request: Request) -> JSONResponse:
        return JSONResponse(
            {"name": "mmhost", "version": mmhost.__version__, "extensions": ["model_repository"]}
        )

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> JSONResponse:
        if host.closed:
            raise HostClosed()
        return JSONResponse({"ready": True})

    async def model_ready(request: Request) -> JSONResponse:
        _, caller = await admit(host, request)
        name = request.path_params["name"]
        await authorize(host, request, caller, DESCRIBE, name)
        if await host.atier(name) is None:
            raise ModelNotLoaded(name)
        return JSONResponse({"name": name, "ready": True})

    async def infer(request: Request) -> Response:
        body, caller = await admit(host, request)
        name = request.path_params["name"]
        await authorize(host, request, caller, INVOKE, name, loads=True)
        limits = DecodeLimits.of(host.settings)
        doc, rows = v2.parse_request(body, request.headers.get(v2.HEADER_LENGTH), limits)
        requested = doc.get("outputs")
        limit = host.settings.max_response_bytes
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
        return JSONResponse(_metadata(info))

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

    return [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{name:path}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name:path}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name:path}", model_metadata, methods=["GET"]),
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
