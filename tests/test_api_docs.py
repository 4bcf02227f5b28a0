"""``/openapi.json`` and ``/docs`` over a real server: every route described, off by a flag."""

from __future__ import annotations

import httpx
from openapi_spec_validator import validate

from mmhost.api import create_app


def test_openapi_describes_every_route(serve, city_store):
    server = serve(store=str(city_store))
    doc = httpx.get(server.url + "/openapi.json").json()
    validate(doc)  # a valid OpenAPI 3.1 document, as Swagger UI and client generators read it
    app = create_app(server.host)
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    for route in app.routes:
        path = route.path.replace(":path", "")  # type: ignore[attr-defined]
        if path in ("/docs", "/openapi.json"):
            continue
        for method in route.methods - {"HEAD"}:  # type: ignore[attr-defined]
            assert (method, path) in described, (method, path)
    infer = doc["paths"]["/v2/models/{name}/versions/{version}/infer"]["post"]
    assert [p["name"] for p in infer["parameters"]] == ["name", "version"]
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text and "/openapi.json" in page.text


def test_docs_can_be_turned_off(serve, city_store):
    server = serve(store=str(city_store), docs=False)
    for path in ("/docs", "/openapi.json"):
        assert httpx.get(server.url + path).status_code == 404
