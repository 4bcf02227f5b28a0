"""``--auth-config FILE``: who may call, with which credentials, under which policies and limits.

    {"principals": [
      {"arn": "arn:aws:sts::111122223333:assumed-role/invoke_ny/MME_Invoke_NY_Model",
       "access_keys": [{"id": "AKIAEXAMPLENY", "secret": "..."}],   # SigV4 (boto3)
       "api_keys": ["..."],                                          # Authorization: Bearer
       "policies": [{"Version": "2012-10-17", "Statement": [...]}],  # plain IAM JSON
       "limits": {"requests_per_second": 100, "burst": 200, "cold_loads_per_second": 10}}]}

JSON, or YAML with the same shape (by the file's suffix; otherwise JSON is tried first). The
whole file is checked when it is read; an error names the file, the place and the reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from mmhost.security.policy import Policy, PolicyError

MIN_API_KEY = 16
_PRINCIPAL_KEYS = {"arn", "access_keys", "api_keys", "policies", "limits"}
_LIMIT_KEYS = {"requests_per_second", "burst", "cold_loads_per_second"}


class AuthConfigError(ValueError):
    """The auth config can't be used; the message says where and why."""


@dataclass(frozen=True)
class Limits:
    """Per principal; 0 = unlimited. ``burst`` requests may arrive at once."""

    requests_per_second: float = 0.0
    burst: int = 0
    cold_loads_per_second: float = 0.0


@dataclass
class Principal:
    arn: str
    policies: tuple[Policy, ...] = ()
    limits: Limits | None = None  # None: the server's default limits
    access_keys: dict[str, str] = field(default_factory=dict)  # id -> secret
    api_key_digests: tuple[bytes, ...] = ()  # sha256 of each API key


@dataclass
class AuthConfig:
    principals: list[Principal]

    def __post_init__(self) -> None:
        self.by_key_id: dict[str, Principal] = {}
        self.by_api_key: dict[bytes, Principal] = {}
        for p in self.principals:
            for key_id in p.access_keys:
                if key_id in self.by_key_id:
                    raise AuthConfigError(f"access key id {key_id!r} is given to two principals")
                self.by_key_id[key_id] = p
            for digest in p.api_key_digests:
                if digest in self.by_api_key:
                    raise AuthConfigError(f"an API key of {p.arn} is given to two principals")
                self.by_api_key[digest] = p

    @classmethod
    def load(cls, path: str | Path) -> AuthConfig:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise AuthConfigError(f"auth config {str(path)!r}: cannot read it ({exc})") from None
        try:
            return cls.parse(_decode(text, path.suffix.lower()))
        except AuthConfigError as exc:
            raise AuthConfigError(f"auth config {str(path)!r}: {exc}") from None

    @classmethod
    def parse(cls, doc: object) -> AuthConfig:
        if not isinstance(doc, dict) or set(doc) != {"principals"}:
            raise AuthConfigError('expected an object {"principals": [...]}')
        items = doc["principals"]
        if not isinstance(items, list) or not items:
            raise AuthConfigError("principals must be a non-empty list")
        return cls([_principal(p, f"principals[{i}]") for i, p in enumerate(items)])


def api_key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _decode(text: str, suffix: str) -> object:
    if suffix != ".yaml" and suffix != ".yml":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if suffix == ".json":
                raise AuthConfigError(f"not valid JSON: {exc}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AuthConfigError(f"neither valid JSON nor valid YAML: {exc}") from None


def _principal(p: object, where: str) -> Principal:
    if not isinstance(p, dict):
        raise AuthConfigError(f"{where}: a principal is an object")
    unknown = set(p) - _PRINCIPAL_KEYS
    if unknown:
        raise AuthConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    arn = p.get("arn")
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        raise AuthConfigError(f"{where}.arn: expected an ARN string (arn:...)")
    access_keys: dict[str, str] = {}
    for i, k in enumerate(_list(p, "access_keys", where)):
        at = f"{where}.access_keys[{i}]"
        if not isinstance(k, dict) or set(k) != {"id", "secret"}:
            raise AuthConfigError(f'{at}: expected {{"id": ..., "secret": ...}}')
        if not all(isinstance(k[f], str) and k[f] for f in ("id", "secret")):
            raise AuthConfigError(f"{at}: id and secret must be non-empty strings")
        access_keys[k["id"]] = k["secret"]
    digests = []
    for i, k in enumerate(_list(p, "api_keys", where)):
        if not isinstance(k, str) or len(k) < MIN_API_KEY:
            raise AuthConfigError(
                f"{where}.api_keys[{i}]: an API key is a string of at least {MIN_API_KEY} "
                "characters"
            )
        digests.append(api_key_digest(k))
    if not access_keys and not digests:
        raise AuthConfigError(f"{where}: give access_keys or api_keys (it could never call)")
    try:
        policies = tuple(
            Policy.parse(d, f"{where}.policies[{i}]")
            for i, d in enumerate(_list(p, "policies", where))
        )
    except PolicyError as exc:
        raise AuthConfigError(str(exc)) from None
    return Principal(arn, policies, _limits(p.get("limits"), where), access_keys, tuple(digests))


def _list(p: dict[str, object], key: str, where: str) -> list[object]:
    value = p.get(key, [])
    if not isinstance(value, list):
        raise AuthConfigError(f"{where}.{key}: expected a list")
    return value


def _limits(doc: object, where: str) -> Limits | None:
    if doc is None:
        return None
    if not isinstance(doc, dict) or set(doc) - _LIMIT_KEYS:
        raise AuthConfigError(f"{where}.limits: expected an object with {sorted(_LIMIT_KEYS)}")
    for k, v in doc.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise AuthConfigError(f"{where}.limits.{k}: expected a number >= 0")
    return Limits(
        float(doc.get("requests_per_second", 0)),
        int(doc.get("burst", 0)),
        float(doc.get("cold_loads_per_second", 0)),
    )
