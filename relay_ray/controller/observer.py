"""Hooks through which telemetry watches the relay loop without the loop knowing about it.

The controller stays pure: it calls these no-op hooks; ``relay_ray.telemetry`` implements
them with OpenTelemetry spans, Ray metrics and switch-rate windows.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from relay_ray.controller.events import RelayResult
from relay_ray.errors import FailureCause
from relay_ray.types import SegmentJob, SegmentRecord, Tier


class RequestObservation:
    """Handed out for one request; ``finished`` is called once with its result."""

    def finished(self, result: RelayResult) -> None:
        pass


class SegmentObservation:
    """Handed out for one segment job; ``migrated`` is called before each re-run after a
    tier fault, ``finished`` once with its record."""

    def migrated(self, cause: FailureCause, failure: int) -> None:
        pass

    def finished(self, record: SegmentRecord) -> None:
        pass


class RelayObserver:
    """No-op observer. Context managers are entered around the request and each tier call
    (so a tracing observer's spans are current while the tier is called)."""

    def request(self, request_id: str, policy: str) -> AbstractContextManager[RequestObservation]:
        return nullcontext(RequestObservation())

    def segment(self, job: SegmentJob, tier: Tier, policy: str) -> AbstractContextManager[SegmentObservation]:
        return nullcontext(SegmentObservation())
