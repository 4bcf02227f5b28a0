"""The guard every route passes: who is calling (SigV4 or an API key), are they within their
limits, and may they do this action on this model.

    early = guard.admit_head(request)                        # before the body is read
    principal = early or guard.authenticate(request, body)  # NotAuthenticated, Throttled
    guard.authorize(principal, action, target, endpoint)    # AccessDenied
    guard.admit_cold_load(principal, target)                # Throttled (cold loads per second)

Without an auth config the guard is open: every request is the anonymous principal and every
action is allowed (the server then binds to loopback by default and says so in its log).
All state is touched on the engine loop only (the server runs there), so no locks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from starlette.requests import Request

from mmhost.errors import AccessDenied, NotAuthenticated, Throttled
from mmhost.security import sigv4
from mmhost.security.audit import AuditLog
from mmhost.security.config import AuthConfig, Limits, Principal, api_key_digest
from mmhost.security.limits import TokenBucket
from mmhost.security.policy import Decision, evaluate
from mmhost.settings import Settings

log = logging.getLogger("mmhost.security")

INVOKE = "sagemaker:InvokeEndpoint"
LOAD = "mmhost:LoadModel"
UNLOAD = "mmhost:UnloadModel"
LIST = "mmhost:ListModels"
DESCRIBE = "mmhost:DescribeModel"
METRICS = "mmhost:GetMetrics"
TARGET_MODEL_KEY = "sagemaker:targetmodel"
ANONYMOUS = Principal("anonymous")
COLD_CHARGE_SECONDS = 1.0  # a charged cold load covers its target's requests this long
REPLAY_MEMORY = 1_000_000  # signatures remembered (~100 B each) within the clock-skew window


@dataclass
class Caller:
    principal: Principal
    region: str  # the region its endpoint ARN is in (the signing region for SigV4)
    signature: bytes | None = None  # for replay detection
    open: bool = False  # no auth config: every action is allowed


class Guard:
    def __init__(self, settings: Settings, config: AuthConfig | None, audit: AuditLog) -> None:
        self.config = config
        self.audit = audit
        self.regions = tuple(r.strip() for r in settings.auth_regions.split(",") if r.strip())
        self.account = settings.account_id
        self.skew = settings.clock_skew_seconds
        self.reject_replays = settings.reject_replays
        default = Limits(settings.rate_limit, settings.rate_burst, settings.cold_load_limit)
        self._limits = {p.arn: p.limits or default for p in (config.principals if config else [])}
        self._requests: dict[str, TokenBucket] = {}
        self._cold: dict[str, TokenBucket] = {}
        self._seen: dict[bytes, float] = {}  # signature -> its timestamp, oldest first
        self._charged: dict[str, float] = {}  # cold target -> when its load was charged
        self._anonymous = Caller(ANONYMOUS, self.regions[0], open=config is None)

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        config = AuthConfig.load(settings.auth_config) if settings.auth_config else None
        return cls(settings, config, AuditLog(settings.audit_log))

    @property
    def open(self) -> bool:
        return self.config is None

    # --- who -------------------------------------------------------------------------------
    def admit_head(self, request: Request) -> Caller | None:
        """Authenticate from the request's head alone, before its body is read: an API key
        completely (the caller, rate-limited); SigV4 up to the signature, which covers the
        body's hash (None: ``authenticate`` finishes with the body). A client without valid
        credentials is refused here and never gets a body buffered."""
        if self.config is None:
            return self._anonymous
        try:
            if _bearer(request) is not None:
                caller = self._identify(request, b"")
            else:
                now = datetime.now(timezone.utc)
                headers = request.headers.items()
                sigv4.check_head(headers, self._secret_of, self.regions, now, self.skew)
                return None
        except NotAuthenticated as exc:
            self._unauthenticated(request, exc)
            raise
        return self._admitted(caller, request)

    def authenticate(self, request: Request, body: bytes) -> Caller:
        if self.config is None:
            return self._anonymous
        try:
            caller = self._identify(request, body)
        except NotAuthenticated as exc:
            self._unauthenticated(request, exc)
            raise
        return self._admitted(caller, request)

    def _unauthenticated(self, request: Request, exc: NotAuthenticated) -> None:
        self.audit.unauthenticated(
            request.client.host if request.client else None,
            code=exc.code,
            reason=exc.message,
            method=request.method,
            path=request.url.path,
        )

    def _admitted(self, caller: Caller, request: Request) -> Caller:
        """``caller``, unless over its request rate (Throttled)."""
        arn = caller.principal.arn
        if not self._bucket(self._requests, arn, "requests").take():
            limits = self._limits[arn]
            self.audit.throttled(arn, limit="requests_per_second", path=request.url.path)
            raise Throttled(
                f"Rate exceeded: {arn} is over its limit of {limits.requests_per_second:g} "
                "requests per second"
            )
        return caller

    def _identify(self, request: Request, body: bytes) -> Caller:
        assert self.config is not None
        key = _bearer(request)
        if key is not None:
            # looked up by its sha256: the lookup's timing says nothing about the key itself
            principal = self.config.by_api_key.get(api_key_digest(key))
            if principal is None:
                raise NotAuthenticated("UnrecognizedClientException", "The API key is not valid.")
            return Caller(principal, self.regions[0])
        signed = sigv4.verify(
            request.method,
            request.scope.get("raw_path", b"").decode("latin-1") or request.url.path,
            request.scope.get("query_string", b"").decode("latin-1"),
            request.headers.items(),
            body,
            self._secret_of,
            self.regions,
            datetime.now(timezone.utc),
            self.skew,
        )
        principal = self.config.by_key_id[signed.key_id]
        if not self.reject_replays:
            return Caller(principal, signed.region)
        signature = bytes.fromhex(signed.signature)  # verified: equal to our own hex digest
        self._check_replay(signature, signed.when.timestamp())
        return Caller(principal, signed.region, signature)

    def _secret_of(self, key_id: str) -> str | None:
        assert self.config is not None
        p = self.config.by_key_id.get(key_id)
        return None if p is None else p.access_keys[key_id]

    def _check_replay(self, signature: bytes, when: float) -> None:
        now = datetime.now(timezone.utc).timestamp()
        while self._seen:  # forget what has left the window (oldest first)
            oldest, at = next(iter(self._seen.items()))
            if at >= now - self.skew and len(self._seen) < REPLAY_MEMORY:
                break
            del self._seen[oldest]
        if signature in self._seen:
            raise sigv4.invalid("this signed request was already used (a replay)")
        self._seen[signature] = when

    def forget(self, caller: Caller) -> None:
        """The request failed: its client may send the same signed request again (botocore
        retries a throttled or unavailable request within the same second)."""
        if caller.signature is not None:
            self._seen.pop(caller.signature, None)

    # --- may they --------------------------------------------------------------------------
    def authorize(self, caller: Caller, action: str, target: str | None, endpoint: str) -> None:
        if self.config is None:
            return
        resource = f"arn:aws:sagemaker:{caller.region}:{self.account}:endpoint/{endpoint.lower()}"
        context = {} if target is None else {TARGET_MODEL_KEY: target}
        decision = evaluate(caller.principal.policies, action, resource, context)
        if decision is Decision.ALLOW:
            return
        explicit = decision is Decision.EXPLICIT_DENY
        self.audit.event(
            "denied",
            principal=caller.principal.arn,
            action=action,
            model=target,
            resource=resource,
            reason=decision.value,
        )
        raise AccessDenied(caller.principal.arn, action, resource, explicit)

    def limits_cold_loads(self, caller: Caller) -> bool:
        """Whether ``caller`` has a cold-load limit (only then is a request's target looked up
        in the cache before it runs)."""
        limits = self._limits.get(caller.principal.arn)
        return limits is not None and limits.cold_loads_per_second > 0

    def admit_cold_load(self, caller: Caller, target: str) -> None:
        """Called before a request that will load ``target`` from the store. One load is
        charged once: requests for the same cold target within ``COLD_CHARGE_SECONDS`` of a
        charged one (concurrent requests, before its load has begun) wait on that load free."""
        arn = caller.principal.arn
        if self.config is None:
            return
        now = time.monotonic()
        charged = self._charged.get(target)
        if charged is not None and now - charged < COLD_CHARGE_SECONDS:
            return
        if self._bucket(self._cold, arn, "cold").take():
            if len(self._charged) >= REPLAY_MEMORY:
                self._charged.clear()
            self._charged[target] = now
            return
        self.audit.throttled(arn, limit="cold_loads_per_second", model=target)
        raise Throttled(
            f"{arn} is over its limit of {self._limits[arn].cold_loads_per_second:g} cold model "
            f"loads per second ({target!r} is not loaded); retry, or invoke loaded models"
        )

    def _bucket(self, buckets: dict[str, TokenBucket], arn: str, kind: str) -> TokenBucket:
        b = buckets.get(arn)
        if b is None:
            lim = self._limits[arn]
            rate = lim.requests_per_second if kind == "requests" else lim.cold_loads_per_second
            b = buckets[arn] = TokenBucket(rate, lim.burst if kind == "requests" else 0)
        return b

    def close(self) -> None:
        self.audit.close()


def _bearer(request: Request) -> str | None:
    """The API key of an ``Authorization: Bearer`` request, else None."""
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None
