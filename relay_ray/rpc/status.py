"""Map relay errors to gRPC status codes a client can act on.

Details say what the client did wrong (INVALID_ARGUMENT) or which kind of unavailability it
met; internal exception text, addresses and stack traces go to the server log with the
request id, never to the client.
"""

from __future__ import annotations

import asyncio

import grpc

from relay_ray.errors import RelayDeadlineError, RelayInputError, RelayOverloadedError, TierUnavailableError
from relay_ray.rpc.auth import RelayUnauthenticatedError


def status_for(exc: BaseException, request_id: str = "") -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for ``exc``."""
    ref = f" (request {request_id})" if request_id else ""
    if isinstance(exc, RelayInputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, RelayUnauthenticatedError):
        return grpc.StatusCode.UNAUTHENTICATED, str(exc)
    if isinstance(exc, RelayOverloadedError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"the relay is at its admission limit; retry later{ref}"
    if isinstance(exc, TierUnavailableError):
        return grpc.StatusCode.UNAVAILABLE, f"a model tier is unavailable ({exc.cause.value}); retry later{ref}"
    if isinstance(exc, (RelayDeadlineError, TimeoutError)):
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"the request's deadline passed{ref}"
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED, f"the request was cancelled{ref}"
    return grpc.StatusCode.INTERNAL, f"internal error{ref}; the server log has the details"


def is_bug(code: grpc.StatusCode) -> bool:
    """INTERNAL is reserved for bugs: those are logged with their stack trace."""
    return code is grpc.StatusCode.INTERNAL
