"""SigV4 verification against requests signed by botocore itself (its SigV4Auth), then
tampered with: every change to what a request does must break it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from mmhost.errors import NotAuthenticated
from mmhost.security.sigv4 import verify

KEY, SECRET = "AKIAEXAMPLENY", "ny-secret-0123456789"
URL = "http://127.0.0.1:8080/endpoints/mmhost/invocations"
TARGET = "X-Amzn-SageMaker-Target-Model"


def signed(
    body: bytes = b"1,2,3", secret: str = SECRET, region: str = "us-east-1", url: str = URL
) -> AWSRequest:
    req = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": "text/csv", TARGET: "NewYork_NY/NewYork_NY.tar.gz"},
    )
    SigV4Auth(Credentials(KEY, secret), "sagemaker", region).add_auth(req)
    return req


def check(req: AWSRequest, body: bytes | None = None, now: datetime | None = None, **kw):
    path, _, query = req.url.split("127.0.0.1:8080", 1)[1].partition("?")
    headers = [(k, v) for k, v in req.headers.items()]
    if not any(k.lower() == "host" for k, _ in headers):
        headers.append(("host", "127.0.0.1:8080"))
    return verify(
        "POST",
        path,
        query,
        headers,
        (req.body or b"") if body is None else body,
        {KEY: SECRET}.get,
        kw.get("regions", ("us-east-1",)),
        now or datetime.now(timezone.utc),
    )


def test_a_request_signed_by_botocore_verifies():
    got = check(signed())
    assert got.key_id == KEY and got.region == "us-east-1"


def test_query_strings_and_empty_bodies_verify():
    req = signed(b"", url=URL + "?b=2&a=1&a=0")
    assert check(req).key_id == KEY


def _code(req: AWSRequest, **kw) -> tuple[str, str]:
    with pytest.raises(NotAuthenticated) as info:
        check(req, **kw)
    return info.value.code, info.value.message


def test_a_wrong_secret_is_rejected():
    code, message = _code(signed(secret="not-the-secret"))
    assert code == "InvalidSignatureException" and "signature we calculated" in message


def test_an_altered_body_is_rejected():
    code, _ = _code(signed(), body=b"9,9,9")
    assert code == "InvalidSignatureException"


def test_an_altered_target_header_is_rejected():
    req = signed()
    req.headers.replace_header(TARGET, "Chicago_IL/Chicago_IL.tar.gz")
    assert _code(req)[0] == "InvalidSignatureException"


def test_an_added_unsigned_sagemaker_header_is_rejected():
    req = signed()
    req.headers["X-Amzn-SageMaker-Custom-Attributes"] = "sneaky"
    code, message = _code(req)
    assert code == "InvalidSignatureException" and "must be signed" in message


def test_a_stale_date_is_rejected():
    later = datetime.now(timezone.utc) + timedelta(minutes=6)
    code, message = _code(signed(), now=later)
    assert code == "InvalidSignatureException" and "Signature expired" in message
    assert check(signed(), now=datetime.now(timezone.utc) + timedelta(minutes=4)).key_id == KEY


def test_a_region_outside_the_configured_ones_is_rejected():
    code, message = _code(signed(region="eu-west-1"))
    assert code == "InvalidSignatureException" and "us-east-1" in message
    assert check(signed(region="eu-west-1"), regions=("us-east-1", "eu-west-1")).key_id == KEY


def test_an_unsigned_payload_claim_is_rejected():
    req = signed()
    req.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    code, _ = _code(req)
    assert code == "InvalidSignatureException"


def test_an_unknown_key_and_a_missing_or_malformed_header():
    req = signed()
    req.headers.replace_header(
        "Authorization", req.headers["Authorization"].replace(KEY, "AKIAUNKNOWN")
    )
    assert _code(req)[0] == "UnrecognizedClientException"
    req = signed()
    del req.headers["Authorization"]
    assert _code(req)[0] == "MissingAuthenticationTokenException"
    req = signed()
    req.headers.replace_header("Authorization", "AWS4-HMAC-SHA256 Credential=x")
    assert _code(req)[0] == "IncompleteSignatureException"
    req = signed()
    req.headers.replace_header("Authorization", "Basic dXNlcjpwYXNz")
    assert _code(req)[0] == "IncompleteSignatureException"
