"""Authentication, per-model IAM policies, limits and the audit log, end to end: a real server
on 127.0.0.1, real boto3 (SigV4) and HTTP clients with API keys."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from conftest import runtime_client

from mmhost.api import create_app
from mmhost.cli import main as cli

ROW = "1992,1531,6,3.0,0.68,1,y,n"
NY, CHICAGO, HOUSTON = (f"{c}/{c}.tar.gz" for c in ("NewYork_NY", "Chicago_IL", "Houston_TX"))
A_ARN = "arn:aws:sts::111122223333:assumed-role/allow_invoke_ny_model_role/MME_Invoke_NY_Model"
B_ARN = "arn:aws:iam::111122223333:user/ops"
A_KEY, A_SECRET = "AKIAEXAMPLENY", "secret-of-principal-a-0123"
B_KEY, B_SECRET = "AKIAEXAMPLEOPS", "secret-of-principal-b-4567"
B_API_KEY = "mmhost-api-key-of-b-0123456789"
NOBODY_API_KEY = "mmhost-api-key-of-nobody-000000"
ENDPOINT_ARN = "arn:aws:sagemaker:us-east-1:111122223333:endpoint/mmhost"


def ny_only_policy(action: str = "sagemaker:InvokeEndpoint") -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": action,
                "Resource": "*",
                "Condition": {"StringLike": {"sagemaker:TargetModel": ["NewYork_NY/*"]}},
            }
        ],
    }


FULL = {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}
PRINCIPALS = [
    {
        "arn": A_ARN,
        "access_keys": [{"id": A_KEY, "secret": A_SECRET}],
        "policies": [ny_only_policy()],
    },
    {
        "arn": B_ARN,
        "access_keys": [{"id": B_KEY, "secret": B_SECRET}],
        "api_keys": [B_API_KEY],
        "policies": [FULL],
    },
    {"arn": "arn:aws:iam::111122223333:user/nobody", "api_keys": [NOBODY_API_KEY]},
]


def start_secured(serve, store, tmp_path, principals=PRINCIPALS, **options):
    """A server over ``store`` with these principals (default: A, B and nobody) and options;
    ``.audit`` is its audit log."""
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"principals": principals}))
    audit = tmp_path / "audit.jsonl"
    server = serve(
        store=str(store),
        auth_config=str(path),
        audit_log=str(audit),
        account_id="111122223333",
        **options,
    )
    server.audit = audit  # type: ignore[attr-defined]
    return server


@pytest.fixture
def secured(serve, city_store, tmp_path):
    """Start a server with these principals (default: A, B and nobody) and options."""
    return lambda principals=PRINCIPALS, **options: start_secured(
        serve, city_store, tmp_path, principals, **options
    )


def invoke(client, target: str) -> float:
    reply = client.invoke_endpoint(
        EndpointName="mmhost", TargetModel=target, ContentType="text/csv", Body=ROW
    )
    return json.loads(reply["Body"].read())["predictions"][0]["score"]


def error_of(call) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as info:
        call()
    r = info.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Message"]


def audit_lines(server) -> list[dict]:
    return [json.loads(line) for line in server.audit.read_text().splitlines()]


def test_the_seed_scenario_with_boto3(secured):
    server = secured()
    a = runtime_client(server.url, key_id=A_KEY, secret=A_SECRET)
    b = runtime_client(server.url, key_id=B_KEY, secret=B_SECRET)
    assert invoke(a, NY) > 0
    code, status, message = error_of(lambda: invoke(a, CHICAGO))
    assert (code, status) == ("AccessDeniedException", 403)
    assert message == (
        f"User: {A_ARN} is not authorized to perform: sagemaker:InvokeEndpoint on resource: "
        f"{ENDPOINT_ARN} because no identity-based policy allows the sagemaker:InvokeEndpoint "
        "action"
    )
    assert invoke(b, NY) > 0 and invoke(b, CHICAGO) > 0
    (denied,) = [e for e in audit_lines(server) if e["event"] == "denied"]
    assert denied["principal"] == A_ARN and denied["model"] == CHICAGO
    assert denied["action"] == "sagemaker:InvokeEndpoint" and denied["reason"] == "implicit deny"
    assert A_SECRET not in server.audit.read_text() and ROW not in server.audit.read_text()


def test_an_explicit_deny_beats_a_full_allow(secured):
    deny_chicago = {
        "Statement": {
            "Effect": "Deny",
            "Action": "sagemaker:InvokeEndpoint",
            "Resource": "*",
            "Condition": {"StringLike": {"sagemaker:TargetModel": "Chicago_*"}},
        }
    }
    principals = [{**PRINCIPALS[1], "policies": [FULL, deny_chicago]}]
    server = secured(principals)
    b = runtime_client(server.url, key_id=B_KEY, secret=B_SECRET)
    assert invoke(b, HOUSTON) > 0
    code, _, message = error_of(lambda: invoke(b, CHICAGO))
    assert code == "AccessDeniedException" and message.endswith(
        "with an explicit deny in an identity-based policy"
    )


def test_bad_credentials_are_rejected_and_the_server_keeps_serving(secured):
    server = secured()
    wrong = runtime_client(server.url, key_id=A_KEY, secret="not-the-secret")
    assert error_of(lambda: invoke(wrong, NY))[:2] == ("InvalidSignatureException", 403)
    unknown = runtime_client(server.url, key_id="AKIAUNKNOWN", secret="x")
    assert error_of(lambda: invoke(unknown, NY))[0] == "UnrecognizedClientException"
    elsewhere = runtime_client(server.url, key_id=A_KEY, secret=A_SECRET, region="eu-west-1")
    assert error_of(lambda: invoke(elsewhere, NY))[0] == "InvalidSignatureException"
    bare = httpx.post(
        server.url + "/invocations",
        content=ROW,
        headers={"content-type": "text/csv", "X-Amzn-SageMaker-Target-Model": NY},
    )
    assert bare.status_code == 403
    assert bare.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert invoke(runtime_client(server.url, key_id=A_KEY, secret=A_SECRET), NY) > 0
    # four bad requests from one address: one line a second at most, the rest counted
    lines = [e for e in audit_lines(server) if e["event"] == "unauthenticated"]
    assert 1 <= len(lines) <= 4
    assert lines[0]["code"] == "InvalidSignatureException" and lines[0]["remote"] == "127.0.0.1"


def _signed_request(server, body: bytes = ROW.encode()) -> AWSRequest:
    req = AWSRequest(
        method="POST",
        url=server.url + "/endpoints/mmhost/invocations",
        data=body,
        headers={"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Model": NY},
    )
    SigV4Auth(Credentials(A_KEY, A_SECRET), "sagemaker", "us-east-1").add_auth(req)
    return req


def test_a_replayed_signed_request_is_rejected(secured):
    server = secured(reject_replays=True)
    req = _signed_request(server)
    headers = dict(req.headers.items())
    first = httpx.post(req.url, content=req.body, headers=headers)
    assert first.status_code == 200, first.text
    again = httpx.post(req.url, content=req.body, headers=headers)
    assert again.status_code == 403
    assert again.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert "replay" in again.json()["message"]


def test_a_signed_request_that_failed_may_be_sent_again(secured):
    server = secured(reject_replays=True)
    req = _signed_request(server, b"not,a,valid,row")  # 400: the client may retry as it was
    headers = dict(req.headers.items())
    for _ in range(2):
        r = httpx.post(req.url, content=req.body, headers=headers)
        assert r.headers["x-amzn-ErrorType"] == "ValidationError"


def test_with_replays_refused_an_inference_id_makes_each_call_unique(secured):
    import uuid

    server = secured(reject_replays=True)
    a = runtime_client(server.url, key_id=A_KEY, secret=A_SECRET)

    def call() -> float:
        reply = a.invoke_endpoint(
            EndpointName="mmhost",
            TargetModel=NY,
            ContentType="text/csv",
            Body=ROW,
            InferenceId=str(uuid.uuid4()),  # X-Amzn-SageMaker-Inference-Id: signed
        )
        return json.loads(reply["Body"].read())["predictions"][0]["score"]

    assert len({call() for _ in range(5)}) == 1  # 5 identical calls within a second or two


def test_without_replay_checks_identical_calls_in_one_second_pass(secured):
    server = secured()
    a = runtime_client(server.url, key_id=A_KEY, secret=A_SECRET)  # legacy retry mode
    assert len({invoke(a, NY) for _ in range(5)}) == 1


def test_api_keys_for_plain_http_and_v2_clients(secured):
    server = secured()
    v2 = {
        "inputs": [{"name": "rows", "shape": [1, 8], "datatype": "BYTES", "data": ROW.split(",")}]
    }
    good = {"Authorization": f"Bearer {B_API_KEY}"}
    r = httpx.post(f"{server.url}/v2/models/{CHICAGO}/infer", json=v2, headers=good)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"][0] > 0
    bad = httpx.post(
        f"{server.url}/v2/models/{CHICAGO}/infer", json=v2, headers={"Authorization": "Bearer x"}
    )
    assert bad.status_code == 403 and "API key is not valid" in bad.json()["error"]
    nobody = {"Authorization": f"Bearer {NOBODY_API_KEY}"}
    denied = httpx.post(f"{server.url}/v2/models/{CHICAGO}/infer", json=v2, headers=nobody)
    assert denied.status_code == 403 and "is not authorized to perform" in denied.json()["error"]
    sm = httpx.post(
        server.url + "/invocations",
        content=ROW,
        headers={**good, "content-type": "text/csv", "X-Amzn-SageMaker-Target-Model": NY},
    )
    assert sm.status_code == 200


def test_tritonclient_with_an_api_key(secured):
    import numpy as np
    import tritonclient.http as triton

    server = secured()
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    rows = triton.InferInput("rows", [1, 8], "BYTES")
    rows.set_data_from_numpy(np.array([ROW.split(",")], dtype=object))
    out = client.infer(NY, [rows], headers={"Authorization": f"Bearer {B_API_KEY}"})
    assert out.as_numpy("score")[0] > 0
    with pytest.raises(triton.InferenceServerException, match="not authorized"):
        client.infer(NY, [rows], headers={"Authorization": f"Bearer {NOBODY_API_KEY}"})


# every route that does something, with what it needs; health routes stay open
GUARDED = [
    ("POST", "/endpoints/mmhost/invocations", "text/csv"),
    ("POST", "/invocations", "text/csv"),
    ("POST", "/models", "application/json"),
    ("GET", "/models", None),
    ("GET", "/models/ny", None),
    ("DELETE", "/models/ny", None),
    ("POST", "/models/ny/invoke", "text/csv"),
    ("GET", f"/v2/models/{NY}", None),
    ("GET", f"/v2/models/{NY}/ready", None),
    ("POST", f"/v2/models/{NY}/infer", "application/json"),
    ("GET", f"/v2/models/{NY}/config", None),
    ("GET", f"/v2/models/{NY}/stats", None),
    ("GET", "/v2/models/stats", None),
    ("GET", f"/v2/models/{NY}/versions/1", None),
    ("GET", f"/v2/models/{NY}/versions/1/ready", None),
    ("POST", f"/v2/models/{NY}/versions/1/infer", "application/json"),
    ("GET", f"/v2/models/{NY}/versions/1/config", None),
    ("GET", f"/v2/models/{NY}/versions/1/stats", None),
    ("POST", "/v2/repository/index", "application/json"),
    ("POST", f"/v2/repository/models/{NY}/load", "application/json"),
    ("POST", f"/v2/repository/models/{NY}/unload", "application/json"),
    ("GET", "/metrics", None),
    ("GET", "/stats", None),
]
OPEN = ["/ping", "/v2", "/v2/health/live", "/v2/health/ready"]
AUTHENTICATED = ["/docs", "/openapi.json"]  # any principal: they describe the API, no model


def test_every_route_family_is_guarded(secured):
    server = secured()
    app = create_app(server.host)
    templates = {(m, r.path) for r in app.routes for m in getattr(r, "methods", ()) or ()}
    templates = {(m, p) for m, p in templates if m != "HEAD"}
    # a new route must be listed here
    assert len(templates) == len(GUARDED) + len(OPEN) + len(AUTHENTICATED)
    body = {"model_name": "ny", "url": NY}
    nobody = {"Authorization": f"Bearer {NOBODY_API_KEY}"}
    for method, path, ctype in GUARDED:
        headers = {"X-Amzn-SageMaker-Target-Model": NY}
        if ctype:
            headers["content-type"] = ctype
        content = json.dumps(body) if ctype == "application/json" else ROW if ctype else None
        for auth in ({}, nobody):
            r = httpx.request(
                method, server.url + path, headers={**headers, **auth}, content=content
            )
            assert r.status_code == 403, (method, path, auth, r.text)
    for path in OPEN:
        assert httpx.get(server.url + path).status_code == 200, path
    for path in AUTHENTICATED:
        assert httpx.get(server.url + path).status_code == 403, path
        assert httpx.get(server.url + path, headers=nobody).status_code == 200, path
    denied = [e for e in audit_lines(server) if e["event"] == "denied"]
    assert {e["action"] for e in denied} == {
        "sagemaker:InvokeEndpoint",
        "mmhost:LoadModel",
        "mmhost:UnloadModel",
        "mmhost:ListModels",
        "mmhost:DescribeModel",
        "mmhost:GetMetrics",
    }


def test_management_actions_follow_the_target_model_condition(secured):
    loader = {
        "arn": "arn:aws:iam::111122223333:user/loader",
        "api_keys": ["mmhost-api-key-of-loader-0000"],
        "policies": [ny_only_policy("mmhost:*")],
    }
    server = secured([loader])
    auth = {"Authorization": "Bearer mmhost-api-key-of-loader-0000"}
    ok = httpx.post(server.url + "/models", json={"model_name": "ny", "url": NY}, headers=auth)
    assert ok.status_code == 200, ok.text
    no = httpx.post(
        server.url + "/models", json={"model_name": "chi", "url": CHICAGO}, headers=auth
    )
    assert no.status_code == 403 and "mmhost:LoadModel" in no.json()["message"]
    # a listing has no target model: the NewYork-only condition can't hold
    assert httpx.get(server.url + "/models", headers=auth).status_code == 403
    # and the policy allows no invocation at all
    invoked = httpx.post(
        server.url + "/models/ny/invoke", content=ROW, headers={**auth, "content-type": "text/csv"}
    )
    assert invoked.status_code == 403


def test_a_principal_over_its_rate_gets_429_while_another_is_unaffected(secured):
    limited = {**PRINCIPALS[0], "limits": {"requests_per_second": 1, "burst": 2}}
    server = secured([limited, PRINCIPALS[1]])
    a = runtime_client(server.url, key_id=A_KEY, secret=A_SECRET)
    b = runtime_client(server.url, key_id=B_KEY, secret=B_SECRET)
    outcomes = []
    for _ in range(6):
        try:
            invoke(a, NY)
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 429
            assert "over its limit of 1 requests per second" in exc.response["Error"]["Message"]
        assert invoke(b, NY) > 0  # B is never throttled
    assert outcomes[:2] == ["ok", "ok"] and "ThrottlingException" in outcomes
    throttled = [e for e in audit_lines(server) if e["event"] == "throttled"]
    assert throttled and {e["principal"] for e in throttled} == {A_ARN}


def test_cold_loads_per_principal_are_capped(secured):
    thrifty = {**PRINCIPALS[1], "limits": {"cold_loads_per_second": 0.001}}  # one, then none
    server = secured([thrifty])
    b = runtime_client(server.url, key_id=B_KEY, secret=B_SECRET)
    assert invoke(b, NY) > 0  # the one cold load it may cause
    code, status, message = error_of(lambda: invoke(b, CHICAGO))
    assert (code, status) == ("ThrottlingException", 429) and "cold model loads" in message
    assert invoke(b, NY) > 0  # loaded models still answer


def test_a_yaml_config_works_too(serve, city_store, tmp_path):
    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump({"principals": PRINCIPALS}))
    server = serve(store=str(city_store), auth_config=str(path), account_id="111122223333")
    a = runtime_client(server.url, key_id=A_KEY, secret=A_SECRET)
    assert invoke(a, NY) > 0
    assert error_of(lambda: invoke(a, CHICAGO))[0] == "AccessDeniedException"


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ('{"principals": []}', "non-empty list"),
        ('{"principals": [{"arn": "x", "api_keys": ["k" ]}]}', "expected an ARN"),
        (
            '{"principals": [{"arn": "arn:aws:iam::1:user/u", "api_keys": ["short"]}]}',
            "at least 16 characters",
        ),
        ('{"principals": [{"arn": "arn:aws:iam::1:user/u"}]}', "give access_keys or api_keys"),
        (
            '{"principals": [{"arn": "arn:aws:iam::1:user/u", "api_keys": ["0123456789abcdef"],'
            ' "policies": [{"Statement": {"Effect": "Allow", "Action": "*"}}]}]}',
            "principals[0].policies[0].Statement[0]: give exactly one of Resource",
        ),
        (
            '{"principals": [{"arn": "arn:aws:iam::1:user/u", "api_keys": ["0123456789abcdef"],'
            ' "limits": {"requests_per_second": -1}}]}',
            "limits.requests_per_second",
        ),
    ],
)
def test_a_bad_auth_config_stops_the_server_with_the_reason(tmp_path, capsys, text, message):
    path = tmp_path / "auth.json"
    path.write_text(text)
    assert cli(["serve", "--store", str(tmp_path), "--auth-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err


def test_without_auth_the_server_is_open_and_says_so(serve, city_store):
    server = serve(store=str(city_store))
    assert invoke(runtime_client(server.url), NY) > 0
