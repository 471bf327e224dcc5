"""Domain errors. Transports map them to status codes (INVALID_ARGUMENT, ...)."""

from __future__ import annotations


class RelayError(Exception):
    """Base class of relay_ray's own errors."""


class RelayInputError(RelayError, ValueError):
    """A request or config field is invalid; ``field`` names it (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self):  # picklable, so it crosses Serve handles (a tier's prepare) as itself
        return type(self), (self.field, self.message)


class TierUnavailableError(RelayError):
    """A tier could not run a segment (replica died, transport failed)."""
