"""AWS Signature Version 4, verified on the server side, as boto3 signs for ``sagemaker``.

    Authorization: AWS4-HMAC-SHA256 Credential=<key id>/<yyyymmdd>/<region>/sagemaker/aws4_request,
                   SignedHeaders=<a;b;c>, Signature=<hex>
    canonical request = METHOD \\n path \\n query \\n <name:value\\n per signed header> \\n
                        signed headers \\n hex(sha256(body))
    string to sign    = AWS4-HMAC-SHA256 \\n X-Amz-Date \\n
                        <date>/<region>/sagemaker/aws4_request \\n hex(sha256(canonical request))
    signing key       = HMAC chain: "AWS4" + secret -> date -> region -> service -> "aws4_request"

The body hash is always computed from the bytes received (a claimed ``X-Amz-Content-SHA256``
must agree with it; ``UNSIGNED-PAYLOAD`` is refused). The date must be within ``skew`` of
now. Every ``x-amz-*`` and ``x-amzn-*`` header, ``content-type`` and ``host`` present must be
signed, so no header that changes what a request does can be added or altered.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from urllib.parse import quote

from mmhost.errors import NotAuthenticated

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "sagemaker"
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_MUST_SIGN = ("host", "content-type", "x-amz-", "x-amzn-")
_NOT_SIGNED_BY_BOTO = {"x-amzn-trace-id"}  # botocore leaves it out of the signature


@dataclass(frozen=True)
class Signed:
    """What a verified request was signed with."""

    key_id: str
    region: str
    signature: str
    when: datetime


def incomplete(why: str) -> NotAuthenticated:
    return NotAuthenticated("IncompleteSignatureException", why, status=400)


def invalid(why: str) -> NotAuthenticated:
    return NotAuthenticated("InvalidSignatureException", why)


def parse_authorization(value: str) -> tuple[list[str], list[str], str]:
    """-> (credential scope parts, signed header names, signature hex)."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise incomplete(f"unsupported authorization type {algorithm!r}; expected {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, val = part.strip().partition("=")
        if not eq:
            raise incomplete(f"authorization header field {part.strip()!r} is not name=value")
        fields[name] = val
    missing = [f for f in ("Credential", "SignedHeaders", "Signature") if not fields.get(f)]
    if missing:
        raise incomplete(f"authorization header lacks {', '.join(missing)}")
    scope = fields["Credential"].split("/")
    if len(scope) != 5:
        raise incomplete(
            "Credential must be <access key id>/<yyyymmdd>/<region>/<service>/aws4_request"
        )
    return scope, fields["SignedHeaders"].split(";"), fields["Signature"]


@dataclass(frozen=True)
class _Head:
    """What the request's head says, checked: all but the payload hash and the signature."""

    by_name: dict[str, list[str]]
    key_id: str
    day: str
    region: str
    signed: list[str]
    signature: str
    stamp: str
    when: datetime
    secret: str


def check_head(
    headers: Iterable[tuple[str, str]],
    secret_of: Callable[[str], str | None],
    regions: tuple[str, ...],
    now: datetime,
    skew_seconds: float = 300.0,
) -> None:
    """Everything ``verify`` checks that needs no body: the header's form, the scope, the
    signed headers, the date and a known key id (NotAuthenticated saying why). A server reads
    a body only for a request that passes this."""
    _head(headers, secret_of, regions, now, skew_seconds)


def _head(
    headers: Iterable[tuple[str, str]],
    secret_of: Callable[[str], str | None],
    regions: tuple[str, ...],
    now: datetime,
    skew_seconds: float,
) -> _Head:
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        by_name.setdefault(name.lower(), []).append(as_sent(value))
    auth = by_name.get("authorization")
    if not auth:
        raise NotAuthenticated(
            "MissingAuthenticationTokenException", "Missing Authentication Token"
        )
    scope, signed, signature = parse_authorization(auth[0])
    key_id, day, region, service, terminator = scope
    if service != SERVICE or terminator != "aws4_request":
        raise invalid(f"credential scope must be for the {SERVICE!r} service, not {service!r}")
    if region not in regions:
        raise invalid(f"credential should be scoped to a valid region: one of {list(regions)}")
    if signed != sorted(set(signed)) or any(n != n.strip().lower() for n in signed):
        raise incomplete("SignedHeaders must be lower-case, sorted and distinct")
    unsigned = [
        n
        for n in by_name
        if n.startswith(_MUST_SIGN) and n not in signed and n not in _NOT_SIGNED_BY_BOTO
    ]
    if unsigned or "host" not in signed:
        raise invalid(f"header(s) {unsigned or ['host']} must be signed")
    stamp = (by_name.get("x-amz-date") or [""])[0]
    try:
        when = datetime.strptime(stamp, _DATE_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise incomplete("X-Amz-Date is missing or not yyyymmddTHHMMSSZ") from None
    if stamp[:8] != day:
        raise invalid(f"credential date {day} does not match X-Amz-Date {stamp}")
    if abs((now - when).total_seconds()) > skew_seconds:
        raise invalid(
            f"Signature expired: {stamp} is outside {skew_seconds:.0f} s of the server's time "
            f"{now.strftime(_DATE_FORMAT)}"
        )
    secret = secret_of(key_id)
    if secret is None:
        raise NotAuthenticated(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    return _Head(by_name, key_id, day, region, signed, signature, stamp, when, secret)


def verify(
    method: str,
    raw_path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    secret_of: Callable[[str], str | None],
    regions: tuple[str, ...],
    now: datetime,
    skew_seconds: float = 300.0,
) -> Signed:
    """The key id a request was validly signed with, else NotAuthenticated saying why.
    ``secret_of(key_id)`` is None for a key this server doesn't know."""
    h = _head(headers, secret_of, regions, now, skew_seconds)
    by_name, key_id, day, region = h.by_name, h.key_id, h.day, h.region
    signed, signature, stamp, when, secret = h.signed, h.signature, h.stamp, h.when, h.secret
    payload = hashlib.sha256(body).hexdigest()
    claimed = by_name.get("x-amz-content-sha256")
    if claimed and claimed[0] != payload:
        raise invalid(
            "X-Amz-Content-SHA256 does not match the body (unsigned payloads are refused)"
        )
    canonical = "\n".join(
        [
            method.upper(),
            quote(_remove_dot_segments(raw_path), safe="/~"),
            _canonical_query(query),
            "".join(
                f"{n}:{','.join(' '.join(v.split()) for v in by_name.get(n, []))}\n" for n in signed
            ),
            ";".join(signed),
            payload,
        ]
    )
    scope_str = f"{day}/{region}/{SERVICE}/aws4_request"
    to_sign = f"{ALGORITHM}\n{stamp}\n{scope_str}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    want = hmac.new(_signing_key(secret, day, region), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, signature):
        raise invalid(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return Signed(key_id, region, signature, when)


def as_sent(value: str) -> str:
    """A header value as the client's SDK had it: the server reads header bytes as latin-1,
    botocore sends (and signs) str values as UTF-8, so ``Zürich`` arrives as ``ZÃ¼rich``."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value  # not UTF-8 on the wire: signed as it came, or not at all


@lru_cache(maxsize=1024)
def _signing_key(secret: str, day: str, region: str) -> bytes:
    """Four HMACs; the same for a key's every request of the day (cached, as SDKs do)."""
    key = ("AWS4" + secret).encode()
    for part in (day, region, SERVICE, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _canonical_query(query: str) -> str:
    """As botocore builds it from a URL: the encoded pairs as sent, sorted."""
    if not query:
        return ""
    pairs = [p.partition("=") for p in query.split("&")]
    return "&".join(f"{k}={v}" for k, _, v in sorted((k, e, v) for k, e, v in pairs))


def _remove_dot_segments(path: str) -> str:
    """As botocore normalizes the path it signs: RFC 3986 5.2.4, and empty segments dropped."""
    if not path:
        return "/"
    out: list[str] = []
    for seg in path.split("/"):
        if seg == "..":
            if out:
                out.pop()
        elif seg and seg != ".":
            out.append(seg)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and out else ""
    return first + "/".join(out) + last
