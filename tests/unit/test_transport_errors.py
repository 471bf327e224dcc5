"""How a failed Serve handle call becomes a relay error (transport/errors.py)."""

from __future__ import annotations

import pytest
from ray import exceptions as rex

from relay_ray.errors import FailureCause, RelayInputError, TierUnavailableError
from relay_ray.transport.errors import from_ray


@pytest.mark.parametrize("raised", [
    TierUnavailableError("engine dead: EngineCore encountered an issue", FailureCause.ENGINE_DEAD),
    RelayInputError("segment.prefix_token_ids", "a segment needs a prefix"),
])
def test_an_error_the_tier_raised_comes_back_as_itself(raised):
    # Ray re-raises a replica's exception as a subclass of RayTaskError and of its class, whose
    # `cause` attribute is Ray's: the controller's migration log read `error.cause.value` from it
    # and failed with AttributeError, turning an engine death into INTERNAL.
    wrapped = rex.RayTaskError("run_segment", "traceback", raised).as_instanceof_cause()
    error = from_ray(wrapped, "run_segment")
    assert type(error) is type(raised) and str(error) == str(raised)
    if isinstance(error, TierUnavailableError):
        assert error.cause is FailureCause.ENGINE_DEAD


def test_a_dead_replica_is_retryable_and_other_errors_pass_through():
    died = from_ray(rex.ActorDiedError(), "run_segment")
    assert isinstance(died, TierUnavailableError) and died.cause is FailureCause.REPLICA_DIED
    bug = ValueError("a bug")
    assert from_ray(bug) is bug
