"""The multi-model container contract: the platform tells the container what to load.

    POST   /models                 {"model_name": ..., "url": ...}  200 | 409 loaded | 507 full
    GET    /models                 {"models": [{"modelName", "modelUrl"}], "nextPageToken"}
    GET    /models?source=store    the same shape for the keys in the store (``prefix=`` narrows)
    GET    /models/{name}          that model, 404 if not loaded
    DELETE /models/{name}          200, 404 if not loaded
    POST   /models/{name}/invoke   the model's output, 404 if not loaded

``model_name`` is an opaque name chosen by the caller, in that principal's own namespace (the
data plane's registry, ``Host.names``: ``cache/names.py``); ``url`` must lie inside the store
(a key or a path, see ``Store.key_of``): nothing outside the store is ever read, and the
caller is authorized before the store is looked at.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Route

from mmhost.api.invocation import (
    admit,
    authorize,
    charge_cold_load,
    guarded,
    invocation,
    whole_number,
)
from mmhost.cache.names import LOADING
from mmhost.codecs.documents import parse_json
from mmhost.errors import ValidationError
from mmhost.host import Host
from mmhost.security.guard import DESCRIBE, INVOKE, LIST, LOAD, UNLOAD, Caller
from mmhost.store.base import CONTROL_CHARS, MAX_KEY

PAGE = 1000


def routes(host: Host) -> list[BaseRoute]:
    loaded = host.names

    async def load_model(request: Request) -> JSONResponse:
        # the one route authorized twice, so it admits and authorizes itself: on what the
        # caller named before the store is looked at (a stat or a listing would tell a caller
        # with no rights which keys exist), then on what that is
        body, caller = await admit(host, request)
        name, url = _load_request(body)
        named = host.store.lexical_key(url)
        await authorize(host, request, caller, LOAD, named)
        key = await run_in_threadpool(host.store.key_of, url)
        await authorize(host, request, caller, LOAD, key, loads=True)
        owner = caller.principal.arn
        loaded.reserve(owner, name)
        try:
            await host.aload(key)
        except BaseException:
            loaded.drop(owner, name)
            raise
        loaded.commit(owner, name, key, url)
        return JSONResponse({"message": f"model {name!r} loaded"})

    async def list_models(request: Request) -> JSONResponse:
        caller = (await guarded(host, request, LIST)).caller
        query = request.query_params
        source = query.get("source", "loaded")
        if source == "store":
            return await list_store(query.get("prefix", ""), query.get("next_page_token", ""))
        if source != "loaded":
            raise ValidationError(f"source must be 'loaded' or 'store', not {source!r}")
        start = _page_start(query.get("next_page_token"))
        mine = loaded.names(caller.principal.arn)
        names = [n for n, e in mine.items() if e is not LOADING]
        page = names[start : start + PAGE]
        body: dict[str, Any] = {"models": [{"modelName": n, "modelUrl": mine[n][1]} for n in page]}
        if start + PAGE < len(names):
            body["nextPageToken"] = str(start + PAGE)
        return JSONResponse(body)

    async def list_store(prefix: str, after: str) -> JSONResponse:
        """A page of the store's keys; the token is the last key of the previous page."""
        for what, value in (("prefix", prefix), ("next_page_token", after)):
            if len(value) > MAX_KEY or CONTROL_CHARS.search(value):
                raise ValidationError(f"{what} must be up to {MAX_KEY} printable characters")
        keys = await host.astore_keys(prefix, after, PAGE + 1)
        body: dict[str, Any] = {"models": [{"modelName": k, "modelUrl": k} for k in keys[:PAGE]]}
        if len(keys) > PAGE:
            body["nextPageToken"] = keys[PAGE - 1]
        return JSONResponse(body)

    def held(request: Request, caller: Caller) -> str:
        """What the caller's name stands for, as authorization sees it (known or not)."""
        return loaded.target(caller.principal.arn, request.path_params["name"])

    async def invoke(request: Request) -> Response:
        g = await guarded(host, request, INVOKE, held)
        key = loaded.key(g.caller.principal.arn, request.path_params["name"])  # 404 after authz
        await charge_cold_load(host, request, g.caller, key)  # a held model may have been evicted
        return await invocation(host, request, replace(g, target=key))

    async def describe(request: Request) -> JSONResponse:
        g = await guarded(host, request, DESCRIBE, held)
        name, owner = request.path_params["name"], g.caller.principal.arn
        key = loaded.key(owner, name)
        url = loaded.names(owner)[name][1]
        return JSONResponse({"modelName": name, "modelUrl": url, "key": key})

    async def unload(request: Request) -> JSONResponse:
        g = await guarded(host, request, UNLOAD, held)
        name, owner = request.path_params["name"], g.caller.principal.arn
        key = loaded.key(owner, name)
        if loaded.drop(owner, name):  # no other name (of anyone) still points at it
            await host.aunload(key)
        return JSONResponse({"message": f"model {name!r} unloaded"})

    return [
        Route("/models", load_model, methods=["POST"]),
        Route("/models", list_models, methods=["GET"]),
        Route("/models/{name:path}/invoke", invoke, methods=["POST"]),
        Route("/models/{name:path}", describe, methods=["GET"]),
        Route("/models/{name:path}", unload, methods=["DELETE"]),
    ]


def _load_request(body: bytes) -> tuple[str, str]:
    doc = parse_json(body, "the load request")
    if not isinstance(doc, dict):
        raise ValidationError('expected a JSON body {"model_name": ..., "url": ...}')
    name, url = doc.get("model_name"), doc.get("url")
    if not isinstance(name, str) or not 0 < len(name) <= 1024:
        raise ValidationError("model_name must be a string of 1-1024 characters")
    if not isinstance(url, str) or not url:
        raise ValidationError("url must be a non-empty string (a location inside the store)")
    return name, url


def _page_start(token: str | None) -> int:
    if token is None:
        return 0
    start = whole_number(token, 10**12)
    if start is None:
        raise ValidationError(f"next_page_token {token[:32]!r} is not one this server gave out")
    return start
