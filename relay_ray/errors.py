"""Domain errors. Transports map them to status codes (INVALID_ARGUMENT, ...)."""

from __future__ import annotations

import enum


class RelayError(Exception):
    """Base class of relay_ray's own errors."""


class RelayInputError(RelayError, ValueError):
    """A request or config field is invalid; ``field`` names it (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):  # crosses Ray process boundaries intact
        return type(self), (self.field, self.message)


class FailureCause(enum.Enum):
    """Why a tier could not run a segment (the ``cause`` label of ``relay_migrations_total``)."""

    REPLICA_DIED = "replica_died"  # the replica's process or actor died
    UNAVAILABLE = "unavailable"  # connection refused/reset, replica unreachable or draining
    ENGINE_DEAD = "engine_dead"  # the replica lives but its engine died
    NO_RESULT = "no_result"  # the stream ended without a result
    STALLED = "stalled"  # no update within the segment stall timeout


class TierUnavailableError(RelayError):
    """A tier could not run a segment for an infrastructure reason (retryable elsewhere)."""

    def __init__(self, message: str, cause: FailureCause = FailureCause.UNAVAILABLE) -> None:
        super().__init__(message)
        self.cause = cause

    def __reduce__(self):
        return type(self), (str(self), self.cause)


class RelayDeadlineError(RelayError, TimeoutError):
    """The request's deadline passed before it finished."""


class RelayOverloadedError(RelayError):
    """Admission refused: the service is at its configured limit (RESOURCE_EXHAUSTED)."""
