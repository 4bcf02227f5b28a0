"""The hardening catalogue (issue 5, item 6), over real HTTP against a real uvicorn server.

Every case is a bad request, a bad target name, an oversized header or a bad artifact. Each
gets a 4xx that says what was wrong, and the server keeps serving: every test ends with a good
request. The tables list every case; a case the API tests already make on a route says where
(``seen``) and runs here on the other routes only.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import socket
import struct
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import safetensors.numpy
from botocore.exceptions import ClientError
from conftest import house_pipeline, runtime_client
from numpy.lib import format as npy_format

from mmhost import Host
from mmhost.api import ServerThread
from mmhost.convert import from_sklearn
from mmhost.tools.houses import COLUMNS

CHICAGO = "Chicago_IL/Chicago_IL.tar.gz"
ROW = b"1992,1531,6,3.0,0.68,1,y,n"
JSON_ROW = [1992, 1531, 6, 3.0, 0.68, 1, "y", "n"]
V2_ROW = {"name": "rows", "shape": [1, 8], "datatype": "BYTES", "data": [str(v) for v in JSON_ROW]}
ARTIFACT_CAP = 1024**2  # max_artifact_bytes of the artifact server: bombs go past it


# --- helpers ---------------------------------------------------------------------------------
def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A .npy header alone: it claims an array the body does not hold."""
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def raw_http(url: str, head: bytes, body: bytes = b"", timeout: float = 10) -> tuple[int, bytes]:
    """Send a request as written (no client normalises ``..`` or refuses a header): the status
    (0 when the server closed without answering) and the response body."""
    where = urlsplit(url)
    reply = b""
    try:
        with socket.create_connection((where.hostname, where.port), timeout=timeout) as sock:
            sock.sendall(
                head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
            )
            while chunk := sock.recv(65536):
                reply += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server closed while the request was still being sent
    if not reply:
        return 0, b""
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def sagemaker_error(client: Any, target: str, body: bytes, **kw: Any) -> tuple[str, int, str]:
    """(error code, HTTP status, message) of an invoke_endpoint that must fail."""
    with pytest.raises(ClientError) as info:
        client.invoke_endpoint(EndpointName="mmhost", TargetModel=target, Body=body, **kw)
    r = info.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Message"]


def assert_still_serving(url: str, target: str = CHICAGO) -> None:
    r = httpx.post(
        f"{url}/invocations",
        content=ROW,
        headers={"content-type": "text/csv", "X-Amzn-SageMaker-Target-Model": target},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 1


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the request cases (each ends by checking it still serves), with Chicago
    in the store and loaded under the container name "chicago"."""
    store = tmp_path_factory.mktemp("store")
    from_sklearn(house_pipeline(0), COLUMNS).save(store / CHICAGO)
    host = Host(store=str(store), log_level="error")
    try:
        with ServerThread(host, port=0) as s:
            r = httpx.post(f"{s.url}/models", json={"model_name": "chicago", "url": CHICAGO})
            assert r.status_code == 200, r.text
            yield s
    finally:
        host.close()


@pytest.fixture(scope="module")
def client(server):
    return runtime_client(server.url)


# --- 1. request bodies -----------------------------------------------------------------------
# (case, content type or None for none, body, status, message fragment, seen on the SageMaker
# route in)
SEEN = "test_api_sagemaker.py"
BODIES = [
    # malformed CSV
    ("csv unbalanced quote", "text/csv", b'1992,"1531,6,3.0,0.68,1,y,n\n', 400, "got 2", None),
    ("csv not utf-8", "text/csv", b"1992,\xff\xfe,6\n", 400, "not UTF-8 text (byte 5)", None),
    ("csv wrong column count", "text/csv", b"1992,1531,6\n", 400, "expected 8 values", SEEN),
    (
        "csv unknown category",
        "text/csv",
        ROW.replace(b"y", b"maybe"),
        400,
        "unknown category",
        SEEN,
    ),
    # malformed JSON
    ("json cut short", "application/json", b'{"instances": [', 400, "not valid JSON", SEEN),
    ("json nested too deeply", "application/json", b"[" * 100_000, 400, "nested too deeply", None),
    (
        "json integer of 5,000 digits",
        "application/json",
        b"[[" + b"9" * 5000 + b',1531,6,3.0,0.68,1,"y","n"]]',
        400,
        "holds an integer of more than 4300 digits",
        None,
    ),
    (
        "json integer past float64",
        "application/json",
        b"[[" + b"9" * 400 + b',1531,6,3.0,0.68,1,"y","n"]]',
        400,
        "an integer of about 400 digits is not a finite number in float32's range",
        None,
    ),
    (
        "json lone surrogate",
        "application/json",
        b'[[1992,1531,6,3.0,0.68,1,"\\ud800","n"]]',
        400,
        "lone UTF-16 surrogate",
        None,
    ),
    (
        "json wrong column count",
        "application/json",
        b"[[1992, 1531]]",
        400,
        "expected 8 values",
        None,
    ),
    (
        "json unknown category",
        "application/json",
        json.dumps([[*JSON_ROW[:6], "maybe", "n"]]).encode(),
        400,
        "unknown category 'maybe'",
        None,
    ),
    (
        "jsonlines bad line",
        "application/jsonlines",
        b"[1]\n{oops\n",
        400,
        "line 2 is not valid",
        None,
    ),
    # NaN / inf / numbers past float32
    ("csv NaN", "text/csv", b"nan" + ROW[4:], 400, "value is missing and the model has no", None),
    ("json NaN", "application/json", b'[[NaN,1531,6,3,0.68,1,"y","n"]]', 400, "is missing", None),
    ("csv inf", "text/csv", b"inf" + ROW[4:], 400, "'inf' is not a finite number", None),
    (
        "json -Infinity",
        "application/json",
        b'[[-Infinity,1,6,3,0.6,1,"y","n"]]',
        400,
        "finite",
        None,
    ),
    ("csv 1e39 overflows float32", "text/csv", b"1e39" + ROW[4:], 400, "float32's range", None),
    (
        "score overflows float32",
        "text/csv",
        b"3e38" + ROW[4:],
        400,
        "the model's score is not finite in float32",
        None,
    ),
    # malformed NPY
    ("npy bad magic", "application/x-npy", b"\x93NUMPX" + npy(np.zeros(8))[6:], 400, "NUMPY", None),
    ("npy lying shape", "application/x-npy", npy_header("<f8", (10**12, 8)), 400, "claims", None),
    ("npy truncated", "application/x-npy", npy(np.zeros((4, 8)))[:-8], 400, "claims shape", None),
    (
        "npy zero-size items, endless shape",
        "application/x-npy",
        npy_header("<U0", (10**6, 10**6)),
        400,
        "its items have no size",
        None,
    ),
    (
        "npy pickled object array",
        "application/x-npy",
        npy(np.array([[1, "a"]], dtype=object)),
        400,
        "Object arrays cannot be loaded",
        None,
    ),
    ("npy .npz archive", "application/x-npy", b"PK\x03\x04" + b"\0" * 40, 400, ".npz", None),
    ("npy 3-D", "application/x-npy", npy(np.zeros((1, 1, 8))), 400, "got shape (1, 1, 8)", None),
    # empty bodies
    ("csv empty", "text/csv", b"", 400, "the CSV body has no rows", None),
    ("json empty", "application/json", b"", 400, "not valid JSON", None),
    ("jsonlines empty", "application/jsonlines", b"", 400, "has no rows", None),
    ("npy empty", "application/x-npy", b"", 400, "not a readable .npy array", None),
    # wrong or missing Content-Type
    ("content type unsupported", "image/png", ROW, 415, "'image/png' is not supported", SEEN),
    ("content type json, body csv", "application/json", ROW, 400, "not valid JSON", None),
    (
        "content type csv, body json",
        "text/csv",
        json.dumps([JSON_ROW]).encode(),
        400,
        "'[[1992' is not a number",
        None,
    ),
    ("no content type, garbage", None, b"<xml/>", 400, "expected 8 values", None),
]


def _body_params() -> list[Any]:
    return [
        pytest.param(route, *case[1:5], id=f"{route}: {case[0]}")
        for route in ("sagemaker", "container")
        for case in BODIES
        if not (route == "sagemaker" and case[5])
    ]


@pytest.mark.parametrize("route, content_type, body, status, words", _body_params())
def test_bad_bodies(server, client, route, content_type, body, status, words):
    if route == "sagemaker":
        kw = {} if content_type is None else {"ContentType": content_type}
        code, got, message = sagemaker_error(client, CHICAGO, body, **kw)
        assert (code, got) == ("ValidationError", status)
    else:
        headers = {} if content_type is None else {"content-type": content_type}
        r = httpx.post(f"{server.url}/models/chicago/invoke", content=body, headers=headers)
        assert r.status_code == status
        assert r.headers["x-amzn-ErrorType"] == "ValidationError"
        message = r.json()["message"]
    assert words in message
    assert len(message) < 1000  # a bad value is quoted, not echoed whole
    assert_still_serving(server.url)


def test_a_body_without_content_type_is_sniffed(server, client):
    """Not an error: a body with no Content-Type is read as JSON when it looks like JSON."""
    reply = client.invoke_endpoint(
        EndpointName="mmhost", TargetModel=CHICAGO, Body=json.dumps([JSON_ROW])
    )
    assert len(json.loads(reply["Body"].read())["predictions"]) == 1


V2_BODIES = [
    ("malformed JSON", b'{"inputs": [', {}, "the infer request is not valid JSON"),
    ("empty body", b"", {}, "the infer request is not valid JSON"),
    (
        "wrong column count",
        {"inputs": [{**V2_ROW, "shape": [1, 7], "data": ["1"] * 7}]},
        {},
        "expected 8 values",
    ),
    (
        "NaN",
        b'{"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP64", "data": [NaN'
        + b", 1" * 7
        + b"]}]}",
        {},
        "value is missing and the model has no imputer",
    ),
    (
        "unknown category",
        {"inputs": [{**V2_ROW, "data": [*V2_ROW["data"][:6], "maybe", "n"]}]},
        {},
        "unknown category 'maybe'",
    ),
    (
        "number past float32",
        {"inputs": [{**V2_ROW, "data": ["1e39", *V2_ROW["data"][1:]]}]},
        {},
        "float32's range",
    ),
    (
        "score past float32",
        {"inputs": [{**V2_ROW, "data": ["3e38", *V2_ROW["data"][1:]]}]},
        {},
        "the model's score is not finite",
    ),
    (
        "integer past float64",
        b'{"inputs": [{"name": "year_built", "shape": [1], "datatype": "FP64", "data": ['
        + b"9" * 400
        + b"]}]}",
        {},
        "past FP64",
    ),
    (
        "lone surrogate in the id",
        b'{"id": "\\udc00", "inputs": [' + json.dumps(V2_ROW).encode() + b"]}",
        {},
        "lone UTF-16 surrogate",
    ),
    (
        "binary header length past the body",
        {"inputs": [V2_ROW]},
        {"Inference-Header-Content-Length": "99999"},
        "is outside the body",
    ),
    ("input name of 100 kB", {"inputs": [{**V2_ROW, "name": "x" * 100_000}]}, {}, "up to 256"),
]


@pytest.mark.parametrize("body, headers, words", [pytest.param(*c[1:], id=c[0]) for c in V2_BODIES])
def test_bad_v2_bodies(server, body, headers, words):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{server.url}/v2/models/{CHICAGO}/infer", content=content, headers=headers)
    assert r.status_code == 400
    assert words in r.json()["error"]
    assert len(r.json()["error"]) < 1000
    assert_still_serving(server.url)


# --- 2. target names -------------------------------------------------------------------------
NAMES = [
    ("dot dot", "..", "'.', '..' and empty path segments are not allowed"),
    ("dot dot slash", "../x", "'.', '..' and empty path segments are not allowed"),
    ("absolute", "/etc/passwd", "it must be relative to the store prefix"),
    ("tab", "a\tb", "control characters are not allowed"),
    ("1,025 bytes", "x" * 1025, "length must be 1..1024 bytes"),
    ("1,026 bytes in 513 characters", "é" * 513, "length must be 1..1024 bytes"),
]


@pytest.mark.parametrize("target, words", [pytest.param(*c[1:], id=c[0]) for c in NAMES])
def test_bad_names_in_the_target_model_header(server, client, target, words):
    if not target.isascii():  # botocore sends headers as latin-1; the runtime asks for ASCII
        target = target.encode().decode("latin-1")
    code, status, message = sagemaker_error(client, target, ROW, ContentType="text/csv")
    assert (code, status) == ("ValidationError", 400)
    assert "invalid target model name" in message and words in message
    assert_still_serving(server.url)


@pytest.mark.parametrize("target", ["%2e%2e", "%2e%2e%2fx"])
def test_percent_signs_in_the_header_are_literal_names(server, client, target):
    """Headers are not percent-decoded: these are names that are not in the store."""
    code, status, message = sagemaker_error(client, target, ROW, ContentType="text/csv")
    assert (code, status) == ("ValidationError", 400)
    assert f"target model {target!r} was not found" in message
    assert_still_serving(server.url)


@pytest.mark.parametrize("byte", [b"\x00", b"\x01", b"\x7f"])
def test_nul_and_control_bytes_in_a_header_are_refused_by_the_http_parser(server, byte):
    status, body = raw_http(
        server.url,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        b"X-Amzn-SageMaker-Target-Model: a" + byte + b"b\r\n",
        ROW,
    )
    assert (status, body) == (400, b"Invalid HTTP request received.")
    assert_still_serving(server.url)


# names in the path, sent as written: uvicorn percent-decodes the path before routing
PATH_NAMES = [
    ("dot dot", "..", "'.', '..' and empty path segments are not allowed"),
    ("dot dot slash", "../x", "'.', '..' and empty path segments are not allowed"),
    ("absolute", "/etc/passwd", "it must be relative to the store prefix"),
    ("%2e%2e", "%2e%2e", "invalid target model name '..'"),
    ("%2e%2e%2fx", "%2e%2e%2fx", "invalid target model name '../x'"),
    ("%2e%2e/%2e%2e/etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "'../../etc/passwd'"),
    ("%252e%252e", "%252e%252e", "target model '%2e%2e' was not found"),
    ("NUL", "a%00b", "control characters are not allowed"),
    ("control character", "a%01b", "control characters are not allowed"),
    ("1,025 bytes", "x" * 1025, "length must be 1..1024 bytes"),
]


@pytest.mark.parametrize("path, words", [pytest.param(*c[1:], id=c[0]) for c in PATH_NAMES])
def test_bad_names_in_the_v2_path(server, path, words):
    body = json.dumps({"inputs": [V2_ROW]}).encode()
    status, reply = raw_http(
        server.url, f"POST /v2/models/{path}/infer HTTP/1.1\r\nHost: x\r\n".encode(), body
    )
    assert status == 400
    assert words in json.loads(reply)["error"]
    assert_still_serving(server.url)


@pytest.mark.parametrize("path", [c[1] for c in PATH_NAMES])
def test_bad_names_in_the_container_path_are_never_looked_up(server, path):
    """Container names are the caller's labels for loaded models, not store keys: any name
    that was not loaded is 404 without touching the store."""
    status, reply = raw_http(
        server.url,
        f"POST /models/{path}/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n".encode(),
        ROW,
    )
    assert status == 404
    assert "is not loaded" in json.loads(reply)["message"]
    assert_still_serving(server.url)


# test_api_container.py refuses urls "/etc", "../.." and "."; these are the rest
@pytest.mark.parametrize(
    "url, words",
    [
        ("%2e%2e", "was not found"),  # a literal name: JSON strings are not percent-decoded
        ("%2e%2e%2fx", "was not found"),
        ("../x", "'.', '..' and empty path segments are not allowed"),
        ("/etc/passwd", "it is outside the store"),
        ("file:///etc/passwd", "it is outside the store"),
        ("a\x00b", "control characters are not allowed"),
        ("x" * 1025, "length must be 1..1024 bytes"),
    ],
)
def test_bad_urls_in_a_container_load_are_refused(server, url, words):
    r = httpx.post(f"{server.url}/models", json={"model_name": "bad", "url": url})
    assert r.status_code == 400
    assert words in r.json()["message"]
    assert httpx.get(f"{server.url}/models").json()["models"][-1]["modelName"] == "chicago"
    assert_still_serving(server.url)


# --- 3. headers too large --------------------------------------------------------------------
BIG_HEADERS = [
    ("one header of 100 kB", b"X-Big: " + b"a" * 100_000 + b"\r\n"),
    ("10,000 headers", b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))),
]


@pytest.mark.parametrize("extra", [pytest.param(c[1], id=c[0]) for c in BIG_HEADERS])
def test_huge_headers_never_hang_or_fail_the_server(serve, city_store, extra):
    """Whatever uvicorn does with them, the answer comes fast, is no 5xx, and the server keeps
    serving."""
    server = serve(store=str(city_store))
    status, _ = raw_http(  # its socket timeout (10 s) fails a hang
        server.url,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        b"X-Amzn-SageMaker-Target-Model: " + CHICAGO.encode() + b"\r\n" + extra,
        ROW,
    )
    assert status < 500
    assert_still_serving(server.url)


@pytest.mark.parametrize("extra", [pytest.param(c[1], id=c[0]) for c in BIG_HEADERS])
def test_huge_headers_are_refused(serve, city_store, extra):
    server = serve(store=str(city_store))
    status, _ = raw_http(
        server.url,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        b"X-Amzn-SageMaker-Target-Model: " + CHICAGO.encode() + b"\r\n" + extra,
        ROW,
    )
    assert status in (0, 431)  # 431, or closed while the head still arrives


def test_an_endless_accept_header_is_a_clear_400(server):
    r = httpx.post(
        f"{server.url}/invocations",
        content=ROW,
        headers={
            "content-type": "text/csv",
            "accept": "a/b;q=0.5," * 3_000,  # under the 64 kB head limit
            "X-Amzn-SageMaker-Target-Model": CHICAGO,
        },
    )
    assert r.status_code == 400
    assert r.json()["message"] == "the Accept header is 30000 characters; the limit is 4096"
    assert_still_serving(server.url)


def test_an_unsupported_content_type_of_30_kb_is_quoted_not_echoed(server):
    r = httpx.post(
        f"{server.url}/models/chicago/invoke",
        content=ROW,
        headers={"content-type": "x/" + "y" * 30_000},
    )
    assert r.status_code == 415
    assert r.json()["message"].startswith("content type 'x/yyyy")
    assert len(r.json()["message"]) < 300
    assert_still_serving(server.url)


# --- 4. artifacts ----------------------------------------------------------------------------
ART = from_sklearn(house_pipeline(0), COLUMNS)
MANIFEST = ART.manifest()
PARAMS = safetensors.numpy.save(ART.tensors())


def entry(
    name: str, blob: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(blob) if kind == tarfile.REGTYPE else 0
    return info, blob


def targz(*entries: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=fmt) as tar:
            for info, blob in entries:
                tar.addfile(info, io.BytesIO(blob) if info.isreg() else None)
    return buf.getvalue()


def good(
    manifest: dict | None = None, **tensors: np.ndarray
) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The Chicago artifact's two files, the manifest or some tensors replaced."""
    params = safetensors.numpy.save({**ART.tensors(), **tensors}) if tensors else PARAMS
    return [
        entry("mmhost.json", json.dumps(manifest or MANIFEST).encode()),
        entry("params.safetensors", params),
    ]


def with_params(params: bytes) -> bytes:
    return targz(good()[0], entry("params.safetensors", params))


def safetensors_header(**coef: Any) -> bytes:
    """params.safetensors with the header's entry for coef changed (the data bytes unchanged)."""
    (n,) = struct.unpack("<Q", PARAMS[:8])
    header = json.loads(PARAMS[8 : 8 + n])
    header["coef"] |= coef
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + PARAMS[8 + n :]


def bomb(kind: str) -> bytes:
    """A ~10 kB .tar.gz that inflates to 8 MiB of zeros, as a file or as a tar header record
    (a pax header and a GNU long name are read whole before any size check)."""
    n = 8 * 1024**2
    if kind == "file":
        return targz(*good(), entry("zeros.bin", b"\0" * n))
    if kind == "pax":
        info, blob = entry("mmhost.json", b"{}")
        info.pax_headers = {"comment": "a" * n}
        return targz((info, blob), fmt=tarfile.PAX_FORMAT)
    return targz(entry("a" * n, b"{}"))


def manifest_with(**changes: Any) -> dict:
    m = json.loads(json.dumps(MANIFEST))
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = m
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[last] = value
    return m


# (case, archive bytes, message fragment)
ARTIFACTS = [
    (
        "symlink entry",
        targz(*good(), entry("evil", kind=tarfile.SYMTYPE, link="/etc/passwd")),
        "is a link",
    ),
    (
        "hardlink entry",
        targz(*good(), entry("hl", kind=tarfile.LNKTYPE, link="mmhost.json")),
        "is a link",
    ),
    (
        "character device entry",
        targz(*good(), entry("null", kind=tarfile.CHRTYPE)),
        "is not a plain file",
    ),
    (
        "block device entry",
        targz(*good(), entry("sda", kind=tarfile.BLKTYPE)),
        "is not a plain file",
    ),
    ("fifo entry", targz(*good(), entry("pipe", kind=tarfile.FIFOTYPE)), "is not a plain file"),
    ("absolute entry", targz(*good(), entry("/tmp/mmhost-hardening-abs", b"x")), "unsafe path"),
    ("dot dot entry", targz(*good(), entry("../mmhost-hardening-up", b"x")), "unsafe path"),
    ("bomb: an 8 MiB file", bomb("file"), f"expands past the {ARTIFACT_CAP}-byte cap"),
    ("bomb: an 8 MiB pax header", bomb("pax"), f"expands past the {ARTIFACT_CAP}-byte cap"),
    ("bomb: an 8 MiB long name", bomb("gnu"), f"expands past the {ARTIFACT_CAP}-byte cap"),
    (
        "safetensors length prefix past the file",
        with_params(struct.pack("<Q", 2**40) + PARAMS[8:]),
        "not a valid safetensors file: Error while deserializing: header too large",
    ),
    (
        "safetensors header not JSON",
        with_params(struct.pack("<Q", 9) + b"{not json" + PARAMS[17:]),
        "invalid JSON in header",
    ),
    (
        "safetensors offsets past the end",
        with_params(safetensors_header(data_offsets=[0, 10**6])),
        "invalid shape, data type, or offset for tensor",
    ),
    (
        "safetensors shape disagrees with the bytes",
        with_params(safetensors_header(shape=[2, 10])),
        "invalid shape, data type, or offset for tensor",
    ),
    (
        "safetensors dtype disagrees with the bytes",
        with_params(safetensors_header(dtype="F32")),
        "invalid shape, data type, or offset for tensor",
    ),
    (
        "manifest: coef narrower than the inputs",
        targz(*good(coef=np.zeros((1, 9)))),
        "coef has shape (1, 9); the manifest says (1, 10)",
    ),
    (
        "manifest: an input more than the parameters",
        targz(
            *good(
                manifest_with(
                    inputs=[*MANIFEST["inputs"], {"name": "pool", "type": "float"}],
                    preprocessing__features=[*MANIFEST["preprocessing"]["features"], {"column": 8}],
                )
            )
        ),
        "preprocessing.scale/shift have shapes (10,)/(10,); the manifest lists 11 features",
    ),
    (
        "manifest: 1,000 classes x 40,006 one-hot inputs",
        targz(
            *good(
                manifest_with(
                    inputs__6__categories=list(range(20_000)),
                    inputs__7__categories=list(range(20_000)),
                    task="multiclass_classifier",
                    outputs={"classes": list(range(1000)), "n_outputs": 1000},
                ),
                coef=np.zeros((1000, 10)),
                intercept=np.zeros(1000),
            )
        ),
        "1000 outputs x 40006 encoded inputs is over 33554432 weights",
    ),
    (
        "weights past float32",
        targz(*good(coef=np.full((1, 10), 1e300))),
        "past float32's range",
    ),
    (
        "a pickle and no manifest",
        targz(entry("model.pkl", pickle.dumps({"coef": [1.0]}))),
        "holds a pickle (model.pkl) and no mmhost.json; mmhost never unpickles",
    ),
    (
        "a joblib file beside a good manifest",
        targz(*good(), entry("model.joblib", pickle.dumps([1, 2]))),
        "holds a pickle (model.joblib); mmhost never unpickles",
    ),
    ("the archive is a pickle", pickle.dumps({"coef": [1.0]}), "the artifact is a pickle"),
    ("the archive is a protocol 0 pickle", pickle.dumps([1], protocol=0), "not a .tar.gz or .tar"),
]


@pytest.fixture(scope="module")
def artifact_server(tmp_path_factory):
    """A server over a store holding every bad artifact (key: the case's index) beside
    Chicago, with a disk tier, and max_artifact_bytes = 1 MiB."""
    root = tmp_path_factory.mktemp("artifacts")
    store, disk = root / "store", root / "disk"
    store.mkdir()
    from_sklearn(house_pipeline(0), COLUMNS).save(store / CHICAGO)
    for i, (_, data, _) in enumerate(ARTIFACTS):
        (store / f"bad{i}.tar.gz").write_bytes(data)
    os.mkfifo(store / "fifo.tar.gz")
    (store / "outside.tar.gz").symlink_to("/etc/passwd")
    host = Host(
        store=str(store), disk_dir=str(disk), max_artifact_bytes=ARTIFACT_CAP, log_level="error"
    )
    try:
        with ServerThread(host, port=0) as s:
            s.root = root  # type: ignore[attr-defined]
            yield s
    finally:
        host.close()


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if not p.is_dir()}


@pytest.mark.parametrize(
    "i, words", [pytest.param(i, c[2], id=c[0]) for i, c in enumerate(ARTIFACTS)]
)
def test_bad_artifacts_fail_their_own_load(artifact_server, i, words):
    root = artifact_server.root
    key = f"bad{i}.tar.gz"
    client = runtime_client(artifact_server.url)
    code, status, message = sagemaker_error(client, key, ROW, ContentType="text/csv")
    assert (code, status) == ("ModelError", 424)
    assert f"model {key!r} could not be loaded" in message and words in message
    assert_still_serving(artifact_server.url)
    # nothing was written beside the store and the disk tier, and no bad copy was kept
    outside = {p for p in files_under(root) if p.parts[len(root.parts)] not in ("store", "disk")}
    assert outside == set()
    assert not Path("/tmp/mmhost-hardening-abs").exists()
    assert not (root.parent / "mmhost-hardening-up").exists()
    assert len(list((root / "disk").glob("*.artifact"))) == 1  # Chicago's


def test_a_fifo_in_the_store_is_refused_not_read(artifact_server):
    """Reading a FIFO would block a load worker forever (each retry a 429)."""
    client = runtime_client(artifact_server.url)
    code, status, message = sagemaker_error(client, "fifo.tar.gz", ROW, ContentType="text/csv")
    assert (code, status) == ("ModelError", 424)
    assert "it is not a regular file or an artifact folder" in message
    assert_still_serving(artifact_server.url)


def test_a_symlink_out_of_the_store_is_refused(artifact_server):
    client = runtime_client(artifact_server.url)
    code, status, message = sagemaker_error(client, "outside.tar.gz", ROW, ContentType="text/csv")
    assert (code, status) == ("ValidationError", 400)
    assert "it resolves outside the store" in message
    assert_still_serving(artifact_server.url)


def test_a_bad_artifact_on_the_v2_route_is_424_too(artifact_server):
    body = json.dumps({"inputs": [V2_ROW]}).encode()
    r = httpx.post(f"{artifact_server.url}/v2/models/bad0.tar.gz/infer", content=body)
    assert r.status_code == 424
    assert "is a link" in r.json()["error"]
    assert_still_serving(artifact_server.url)
