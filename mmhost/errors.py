"""One error base class for everything a caller can cause.

Each error is plain data: an HTTP status, the SageMaker runtime error code (sent as the
``x-amzn-ErrorType`` header by the HTTP layer) and a message built from its arguments.
Programmer errors are not MmhostError: they stay ValueError/AssertionError.
"""

from __future__ import annotations


class MmhostError(Exception):
    """Base of all caller-visible errors."""

    status: int = 500
    code: str = "InternalFailure"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(MmhostError):
    """The request is malformed: bad rows, unknown column or category, bad model name."""

    status = 400
    code = "ValidationError"


class InvalidModelName(ValidationError):
    def __init__(self, name: object, why: str) -> None:
        super().__init__(f"invalid target model name {name!r}: {why}")
        self.name = name


class ModelNotFound(ValidationError):
    """The target model is not in the store (the runtime answers this with ValidationError)."""

    def __init__(self, name: str, where: str = "the store") -> None:
        super().__init__(f"target model {name!r} was not found in {where}")
        self.name = name


class BadArtifact(MmhostError):
    """An artifact fails its own load: truncated, unsafe, pickled or inconsistent."""

    status = 424
    code = "ModelError"

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"model {name!r} could not be loaded: {why}")
        self.name = name
        self.why = why


class UnsupportedModel(MmhostError):
    """A converter met an estimator or step it cannot express (raised at conversion time)."""

    status = 400
    code = "ValidationError"


class InsufficientCapacity(MmhostError):
    """The model does not fit in the device budget even after evicting everything unpinned."""

    status = 507
    code = "ServiceUnavailable"

    def __init__(self, name: str, need: int, budget: int, never: bool = False) -> None:
        why = "more than the whole device budget of" if never else "the device budget is"
        tail = (
            " bytes: it can never be loaded here (raise device_budget)"
            if never
            else " bytes and everything else resident is in use"
        )
        super().__init__(f"model {name!r} needs {need} bytes on the device; {why} {budget}{tail}")


class SlabFull(MmhostError):
    """An arena slab cannot take another slot (e.g. its node indices would pass int32)."""

    status = 507
    code = "ServiceUnavailable"


class HostClosed(MmhostError):
    status = 503
    code = "ServiceUnavailable"

    def __init__(self) -> None:
        super().__init__("the host is closed")


class ModelNotReady(MmhostError):
    """A load of the target model is still running after ``load_timeout_seconds`` (boto3
    retries)."""

    status = 429
    code = "ModelNotReadyException"

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(f"model {name!r} is still loading after {seconds:g} s; retry the request")


class UnsupportedMediaType(MmhostError):
    status = 415
    code = "ValidationError"

    def __init__(self, content_type: str, supported: tuple[str, ...]) -> None:
        super().__init__(
            f"content type {content_type!r} is not supported; use one of {', '.join(supported)}"
        )


class NotAcceptable(MmhostError):
    status = 406
    code = "ValidationError"

    def __init__(self, accept: str, supported: tuple[str, ...]) -> None:
        super().__init__(f"cannot answer in {accept!r}; Accept one of {', '.join(supported)}")


class PayloadTooLarge(MmhostError):
    status = 413
    code = "ValidationError"

    def __init__(self, size: int | None, limit: int) -> None:
        got = "the request body" if size is None else f"a request body of {size} bytes"
        super().__init__(f"{got} is over the limit of {limit} bytes")


class ResponseTooLarge(ValidationError):
    """The answer would pass ``max_response_bytes``: refused before it is scored or encoded."""

    status = 413

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            f"the answer would be {what}, {size} bytes; the limit is {limit} bytes "
            "(max_response_bytes): send fewer rows per request"
        )


class BodyTimeout(MmhostError):
    """The client did not send its whole body within ``body_timeout_seconds``."""

    status = 408
    code = "ValidationError"

    def __init__(self, got: int, seconds: float) -> None:
        super().__init__(f"the request body did not arrive within {seconds:g} s ({got} bytes came)")


class ClientDisconnected(MmhostError):
    """The client went away before its request was read; nobody is left to answer. Not a
    server error: it is neither logged as one nor counted as a 5xx."""

    status = 499
    code = "ClientDisconnected"

    def __init__(self) -> None:
        super().__init__("the client disconnected before its request body was read")


class ServerBusy(MmhostError):
    """Too many request bodies are being received at once (``max_inflight_body_bytes``)."""

    status = 503
    code = "ServiceUnavailable"

    def __init__(self, size: int, inflight: int, limit: int) -> None:
        super().__init__(
            f"the server is receiving {inflight} bytes of request bodies, and this one's "
            f"{size} would pass the limit of {limit}; retry"
        )


class ModelNotLoaded(MmhostError):
    """Container contract: the named model was never loaded (or was unloaded)."""

    status = 404
    code = "ValidationError"

    def __init__(self, name: str) -> None:
        super().__init__(f"model {name[:256]!r} is not loaded")


class VersionNotAvailable(MmhostError):
    """KServe V2: a ``/versions/{v}`` route for a version other than the one served."""

    status = 404
    code = "ValidationError"

    def __init__(self, name: str, version: str, served: str) -> None:
        super().__init__(
            f"model {name[:256]!r} has no version {version[:64]!r} here: this host serves its "
            f"current version in the store, {served!r}"
        )


class ModelAlreadyLoaded(MmhostError):
    """Container contract: ``POST /models`` for a name that is loaded already."""

    status = 409
    code = "ValidationError"

    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} is already loaded")


class ModelInUse(MmhostError):
    """V2 repository unload of a model that container-contract names still point at."""

    status = 409
    code = "ValidationError"

    def __init__(self, name: str, names: int) -> None:
        super().__init__(
            f"model {name[:256]!r} is loaded under {names} container-contract name(s) "
            "(POST /models); unload those (DELETE /models/{name}) first"
        )


class StoreUnavailable(MmhostError):
    """The store could not be reached (or broke off): a cold load fails fast; resident models
    keep serving."""

    status = 503
    code = "ServiceUnavailable"

    def __init__(self, store: str, why: str) -> None:
        super().__init__(f"the model store {store} is unavailable: {why}")


class StoreAccessDenied(MmhostError):
    """The store refused mmhost's own credentials for a key (a deployment problem, named)."""

    status = 424
    code = "ModelError"

    def __init__(self, store: str, key: str) -> None:
        super().__init__(
            f"the model store {store} denied access to {key!r}: check mmhost's credentials "
            "and the bucket policy"
        )


class NotAuthenticated(MmhostError):
    """No valid credentials: missing, unknown, badly signed, or stale. The code says which
    (the runtime's own: MissingAuthenticationTokenException, UnrecognizedClientException,
    InvalidSignatureException, IncompleteSignatureException)."""

    status = 403

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class AccessDenied(MmhostError):
    """An authenticated caller whose policies don't allow this action on this model."""

    status = 403
    code = "AccessDeniedException"

    def __init__(self, principal: str, action: str, resource: str, explicit: bool) -> None:
        why = (
            "with an explicit deny in an identity-based policy"
            if explicit
            else f"because no identity-based policy allows the {action} action"
        )
        super().__init__(
            f"User: {principal} is not authorized to perform: {action} on resource: "
            f"{resource} {why}"
        )


class Throttled(MmhostError):
    """A caller over its request rate or its cold-load rate."""

    status = 429
    code = "ThrottlingException"


class FleetError(MmhostError):
    """``mmhost fleet up`` could not start or keep its fleet: a replica or HAProxy failed."""

    code = "FleetError"
