"""Transport failures as the controller's error types.

Infrastructure faults become :class:`TierUnavailableError` with a :class:`FailureCause`, so
the controller re-runs the segment elsewhere (segment migration); a rejected job stays a
client error; an expired deadline stays a deadline.
"""

from __future__ import annotations

import grpc

from relay_ray.errors import (
    FailureCause, RelayDeadlineError, RelayInputError, RelayOverloadedError, TierUnavailableError,
)

_GRPC_INFRA = {grpc.StatusCode.UNAVAILABLE: FailureCause.UNAVAILABLE,
               grpc.StatusCode.CANCELLED: FailureCause.UNAVAILABLE,  # the server side went away
               grpc.StatusCode.ABORTED: FailureCause.UNAVAILABLE}


def from_grpc(exc: grpc.aio.AioRpcError, what: str = "tier call") -> Exception:
    """A failed gRPC tier call as a relay error."""
    code = exc.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return RelayInputError("segment", exc.details() or "invalid segment job")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RelayDeadlineError(f"{what}: deadline exceeded")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RelayOverloadedError(f"{what}: tier replica at its limit")
    if code in _GRPC_INFRA:
        return TierUnavailableError(f"{what} failed with {code.name}: {exc.details()}", _GRPC_INFRA[code])
    return RuntimeError(f"{what} failed with {code.name}: {exc.details()}")


def from_ray(exc: BaseException, what: str = "tier call") -> BaseException:
    """A failed Serve handle call as a relay error (``exc`` unchanged if it is not Ray's)."""
    from ray import exceptions as rex
    from ray.serve import exceptions as sex

    ours = (TierUnavailableError, RelayInputError, RelayDeadlineError)
    if isinstance(exc, rex.RayTaskError) and isinstance(exc.cause, ours):
        # Raised by the tier itself. Ray re-raises it as a subclass of both, whose ``cause``
        # is Ray's (the original exception), not TierUnavailableError.cause (a FailureCause).
        return exc.cause
    if isinstance(exc, ours):
        return exc
    if isinstance(exc, sex.BackPressureError):
        return RelayOverloadedError(f"{what}: tier queue full")
    if isinstance(exc, (rex.ActorDiedError, rex.WorkerCrashedError, rex.NodeDiedError, rex.OwnerDiedError)):
        return TierUnavailableError(f"{what}: replica died ({type(exc).__name__})", FailureCause.REPLICA_DIED)
    if isinstance(exc, (rex.RayActorError, sex.DeploymentUnavailableError, sex.ReplicaUnavailableError)):
        return TierUnavailableError(f"{what}: replica unavailable ({type(exc).__name__})", FailureCause.UNAVAILABLE)
    return exc
