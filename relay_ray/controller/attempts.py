"""Running one segment job on a tier, surviving the tier's failures (segment migration).

The controller holds a request's whole text state, so a segment whose replica dies is not
lost: it is re-run on a healthy replica of the same tier from the committed prefix plus the
tokens of this segment already received (``SegmentJob.resume_token_ids``). The tier counts
those as the segment's first tokens, so the stop rule continues as if uninterrupted, and
never streams them again. Greedy output is identical to a fault-free run.

Only infrastructure failures (:class:`~relay_ray.errors.TierUnavailableError`: a dead replica,
an unreachable endpoint, a dead engine, a stream without a result, a stalled stream) are
retried, at most ``migration_limit`` times per segment with exponential backoff. The
request's deadline bounds everything: when it passes, :class:`RelayDeadlineError`.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from relay_ray.controller.tier_client import TierClient
from relay_ray.errors import FailureCause, RelayDeadlineError, TierUnavailableError
from relay_ray.types import SegmentDelta, SegmentJob, SegmentResult

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failed segment is re-run on its tier."""

    migration_limit: int = 3  # re-runs of one segment (0: fail on the first fault)
    backoff_s: float = 0.25  # wait before the first re-run; doubles each time
    max_backoff_s: float = 4.0
    stall_timeout_s: float = 120.0  # no update for this long: the replica is treated as dead

    def delay_s(self, failure: int) -> float:
        """Wait before re-run number ``failure`` (1-based)."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** (failure - 1))


class Deadline:
    """A request's deadline on the controller's clock (``None``: no deadline)."""

    def __init__(self, clock: Callable[[], float], timeout_s: float | None) -> None:
        self._clock = clock
        self.at = None if timeout_s is None else clock() + timeout_s

    def remaining_s(self) -> float | None:
        return None if self.at is None else self.at - self._clock()

    def check(self) -> float | None:
        """Seconds left; raises :class:`RelayDeadlineError` when none are."""
        left = self.remaining_s()
        if left is not None and left <= 0:
            raise RelayDeadlineError("the request's deadline passed")
        return left

    def bound(self, seconds: float) -> float:
        """``seconds``, or less if the deadline comes first."""
        left = self.check()
        return seconds if left is None else min(seconds, left)


OnFailure = Callable[[TierUnavailableError, int], None]


async def run_segment(client: TierClient, job: SegmentJob, policy: RetryPolicy, deadline: Deadline,
                      on_failure: OnFailure) -> AsyncIterator[SegmentDelta | SegmentResult]:
    """Yield the segment's deltas, then its result, re-running it after infrastructure faults.

    Deltas of a re-run carry only tokens not received before; the result is the whole
    segment. ``on_failure(error, failure_number)`` is called before each re-run.
    """
    received: list[int] = []
    failures = 0
    while True:
        attempt = replace(job, resume_token_ids=job.resume_token_ids + tuple(received),
                          timeout_s=deadline.check() or 0.0)
        try:
            async with aclosing(_watched(client, attempt, policy, deadline)) as items:
                async for item in items:
                    if isinstance(item, SegmentResult):
                        yield item
                        return
                    received.extend(item.token_ids)
                    yield item
            raise TierUnavailableError(f"segment {job.segment_index} ended without a result", FailureCause.NO_RESULT)
        except TierUnavailableError as exc:
            failures += 1
            if failures > policy.migration_limit:
                raise
            on_failure(exc, failures)
            await asyncio.sleep(deadline.bound(policy.delay_s(failures)))


async def _watched(client: TierClient, job: SegmentJob, policy: RetryPolicy,
                   deadline: Deadline) -> AsyncIterator[SegmentDelta | SegmentResult]:
    """The tier's stream, with the deadline and the stall timeout applied to every update."""
    stream = aiter(client.stream_segment(job))
    try:
        while True:
            wait_s = deadline.bound(policy.stall_timeout_s)
            try:
                async with asyncio.timeout(wait_s):
                    item = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:  # ours, or the tier's own job.timeout_s (the same deadline)
                deadline.check()
                if wait_s < policy.stall_timeout_s:  # the deadline was the bound that fired
                    raise RelayDeadlineError("the request's deadline passed") from None
                raise TierUnavailableError(f"no update for {policy.stall_timeout_s:.0f} s",
                                           FailureCause.STALLED) from None
            except (ConnectionError, OSError) as exc:
                raise TierUnavailableError(f"tier connection failed: {exc}") from exc
            yield item
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()  # closes the transport call: the tier aborts the engine request


async def call_with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy, deadline: Deadline) -> T:
    """A unary tier call (describe, prepare), retried like a segment after infrastructure faults."""
    failures = 0
    while True:
        try:
            async with asyncio.timeout(deadline.bound(policy.stall_timeout_s)):
                return await call()
        except TierUnavailableError:
            failures += 1
            if failures > policy.migration_limit:
                raise
            await asyncio.sleep(deadline.bound(policy.delay_s(failures)))
        except TimeoutError:
            deadline.check()
            raise TierUnavailableError("tier call timed out", FailureCause.STALLED) from None
