"""``GET /openapi.json`` (OpenAPI 3.1, made from the app's own route table) and ``GET /docs``
(Swagger UI over it). With an auth config both need an authenticated caller (any principal: they
describe the API, not the models). ``--no-docs`` leaves them out.

The routes are plain Starlette routes (see ``app.py``), so FastAPI's generator sees none of
them: the description is built here, one operation per route and method, its summary the
handler's docstring."""

from __future__ import annotations

import inspect
import re
from typing import Any

from fastapi import Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Route

import mmhost
from mmhost.api.invocation import admit
from mmhost.host import Host

_PARAM = re.compile(r"{(\w+)(?::\w+)?}")
_ERROR = {
    "description": "an error: a JSON body {ErrorCode, Message} (see PROTOCOLS.md for the codes)"
}


def routes(host: Host, app_routes: list[BaseRoute]) -> list[BaseRoute]:
    described: dict[str, Any] = {}

    async def openapi(request: Request) -> JSONResponse:
        await admit(host, request)
        if not described:
            described.update(document(app_routes))
        return JSONResponse(described)

    async def docs(request: Request) -> Response:
        await admit(host, request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title="mmhost")

    return [
        Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
        Route("/docs", docs, methods=["GET"], include_in_schema=False),
    ]


def document(app_routes: list[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI description of ``app_routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app_routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        path = _PARAM.sub(r"{\1}", route.path)
        doc = inspect.getdoc(route.endpoint) or route.name.replace("_", " ")
        for method in sorted((route.methods or set()) - {"HEAD"}):
            op: dict[str, Any] = {
                "operationId": f"{route.name}_{method.lower()}_{len(paths)}",
                "summary": doc.splitlines()[0],
                "tags": [route.endpoint.__module__.rsplit(".", 1)[-1]],
                "responses": {"200": {"description": "OK"}, "4XX": _ERROR, "5XX": _ERROR},
            }
            if "\n" in doc:
                op["description"] = doc
            params = [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in _PARAM.findall(route.path)
            ]
            if params:
                op["parameters"] = params
            if method in ("POST", "PUT"):
                op["requestBody"] = {
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}
                }
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "mmhost", "version": mmhost.__version__},
        "paths": paths,
    }
