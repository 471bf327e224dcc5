"""Map relay errors to gRPC status codes."""

from __future__ import annotations

import grpc

from relay_ray.errors import RelayInputError, TierUnavailableError


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for ``exc``."""
    if isinstance(exc, RelayInputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, TierUnavailableError):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"timed out: {exc}"
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
