"""The controller's telemetry: one span per request, one child span per segment job,
Ray metrics, and the sliding-window switch-rate signals autoscaling reads."""

from __future__ import annotations

from contextlib import contextmanager

from relay_ray.autoscale.rates import SlidingRate
from relay_ray.controller.events import RelayResult
from relay_ray.controller.observer import RelayObserver, RequestObservation, SegmentObservation
from relay_ray.errors import FailureCause
from relay_ray.telemetry import metrics as M
from relay_ray.types import SegmentJob, SegmentRecord, Tier

TRACER_NAME = "relay_ray"


def _tracer():
    # Looked up per use: Serve installs the provider in each process after import, and a
    # module-level tracer cannot be pickled with the deployment.
    from opentelemetry import trace

    return trace.get_tracer(TRACER_NAME)


class _Request(RequestObservation):
    def __init__(self, observer: TelemetryObserver, span, policy: str) -> None:
        self.observer, self.span, self.policy = observer, span, policy

    def finished(self, result: RelayResult) -> None:
        s = result.stats
        self.span.set_attributes({
            "relay.large_tokens": s.tokens_by_tier[Tier.LARGE], "relay.small_tokens": s.tokens_by_tier[Tier.SMALL],
            "relay.switches": s.num_switches, "relay.segments": s.num_segments,
            "relay.finish_reason": s.finish_reason.name.lower(), "relay.latency_ms": s.latency_ms,
            "relay.handoff_mode": s.handoff_mode.value, "relay.migrations": s.num_migrations,
        })
        self.observer.request_finished(result, self.policy)


class _Segment(SegmentObservation):
    def __init__(self, observer: TelemetryObserver, span, policy: str, tier: Tier) -> None:
        self.observer, self.span, self.policy, self.tier = observer, span, policy, tier

    def migrated(self, cause: FailureCause, failure: int) -> None:
        self.span.add_event("relay.migration", {"relay.cause": cause.value, "relay.attempt": failure})
        if self.observer.metrics:
            self.observer.metrics.inc(M.MIGRATIONS, tier=self.tier.value, cause=cause.value)

    def finished(self, record: SegmentRecord) -> None:
        t = record.timing
        self.span.set_attributes({
            "relay.replica": record.replica_id, "relay.new_tokens": record.num_tokens,
            "relay.dropped_tokens": record.num_dropped_tokens, "relay.stop_reason": record.finish_reason.name.lower(),
            "relay.matched_stop": record.matched_stop, "relay.prompt_tokens": record.num_prompt_tokens,
            "relay.cached_prefix_tokens": record.num_cached_tokens, "relay.queue_ms": t.queue_ms,
            "relay.prefill_ms": t.prefill_ms, "relay.decode_ms": t.decode_ms, "relay.handoff_ms": record.handoff_ms,
            "relay.controller_ms": record.controller_ms, "relay.transport_ms": record.transport_ms,
            "relay.engine_in_ms": t.engine_in_ms, "relay.engine_step_ms": t.engine_step_ms,
            "relay.engine_out_ms": t.engine_out_ms,
        })
        self.observer.segment_finished(record, self.policy)


class TelemetryObserver(RelayObserver):
    """Lives in a controller replica; ``metrics=None`` skips Ray metrics (unit tests)."""

    def __init__(self, metrics: M.RayMetrics | None = None, window_s: float = 10.0) -> None:
        self.metrics = metrics
        self.demand = {tier: SlidingRate(window_s) for tier in Tier}
        self.switch_rate = SlidingRate(window_s)
        self.inflight = {tier: 0 for tier in Tier}
        self._prefix = {tier: [0, 0] for tier in Tier}  # cached, prompt tokens

    @contextmanager
    def request(self, request_id: str, policy: str):
        with _tracer().start_as_current_span(
            "relay.request", attributes={"relay.request_id": request_id, "relay.policy": policy}
        ) as span:
            yield _Request(self, span, policy)

    @contextmanager
    def segment(self, job: SegmentJob, tier: Tier, policy: str):
        attributes = {"relay.tier": tier.value, "relay.policy": policy, "relay.segment_index": job.segment_index}
        self._set_inflight(tier, +1)
        try:
            with _tracer().start_as_current_span(f"relay.segment {tier.value}", attributes=attributes) as span:
                yield _Segment(self, span, policy, tier)
        finally:
            self._set_inflight(tier, -1)

    def _set_inflight(self, tier: Tier, delta: int) -> None:
        self.inflight[tier] += delta
        if self.metrics:
            self.metrics.set(M.INFLIGHT_SEGMENTS, self.inflight[tier], tier=tier.value)

    def segment_finished(self, record: SegmentRecord, policy: str) -> None:
        tier = record.tier
        self.demand[tier].add(record.num_tokens)
        prefix = self._prefix[tier]
        prefix[0] += record.num_cached_tokens
        prefix[1] += record.num_prompt_tokens
        if not self.metrics:
            return
        m, t = self.metrics, tier.value
        m.inc(M.SEGMENTS, policy=policy, tier=t)
        m.inc(M.TOKENS, record.num_tokens, policy=policy, tier=t)
        m.observe(M.SEGMENT_LATENCY, record.timing.total_ms, tier=t)
        m.observe(M.HANDOFF_OVERHEAD, record.handoff_ms, tier=t)
        m.inc(M.PREFIX_PROMPT_TOKENS, record.num_prompt_tokens, tier=t)
        m.inc(M.PREFIX_CACHED_TOKENS, record.num_cached_tokens, tier=t)
        if prefix[1]:
            m.set(M.PREFIX_HIT_RATIO, prefix[0] / prefix[1], tier=t)

    def request_finished(self, result: RelayResult, policy: str) -> None:
        segments = result.segments
        switches = [(a.tier, b.tier) for a, b in zip(segments, segments[1:]) if a.tier is not b.tier]
        self.switch_rate.add(len(switches))
        if not self.metrics:
            return
        m = self.metrics
        m.inc(M.REQUESTS, policy=policy, finish_reason=result.stats.finish_reason.name.lower())
        for src, dst in switches:
            m.inc(M.SWITCHES, policy=policy, from_tier=src.value, to_tier=dst.value)
        self.publish_rates()

    def rates(self) -> dict[str, float]:
        """Switch-rate telemetry: tokens demanded per tier per second, switches per second."""
        out = {f"demand_tokens_per_s_{tier.value}": rate.per_second() for tier, rate in self.demand.items()}
        out["switches_per_s"] = self.switch_rate.per_second()
        return out

    def publish_rates(self) -> None:
        if self.metrics:
            for tier, rate in self.demand.items():
                self.metrics.set(M.DEMAND_TOKENS_PER_S, rate.per_second(), tier=tier.value)
            self.metrics.set(M.SWITCHES_PER_S, self.switch_rate.per_second())
