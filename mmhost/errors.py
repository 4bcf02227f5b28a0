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

    def __init__(self, name: str, need: int, budget: int) -> None:
        super().__init__(
            f"model {name!r} needs {need} bytes on the device; the device budget is {budget}"
            " bytes and everything else resident is in use"
        )


class HostClosed(MmhostError):
    status = 503
    code = "ServiceUnavailable"

    def __init__(self) -> None:
        super().__init__("the host is closed")
