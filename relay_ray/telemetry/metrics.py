"""Every metric relay_ray exports, in one place. Ray prefixes names with ``ray_`` on the
Prometheus endpoint (``ray_relay_switches_total`` ...).

Every metric also carries an ``application`` tag (the Serve application of the controller
or tier replica that records it), so several relay applications on one cluster, or one
application's dashboards, are told apart.
"""

from __future__ import annotations

from dataclasses import dataclass

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # counter | histogram | gauge
    description: str
    tag_keys: tuple[str, ...]


REQUESTS = MetricSpec("relay_requests_total", "counter", "relay requests finished", ("policy", "finish_reason"))
SEGMENTS = MetricSpec("relay_segments_total", "counter", "segment jobs run", ("policy", "tier"))
SWITCHES = MetricSpec("relay_switches_total", "counter", "tier switches", ("policy", "from_tier", "to_tier"))
TOKENS = MetricSpec("relay_tokens_total", "counter", "committed output tokens", ("policy", "tier"))
SEGMENT_LATENCY = MetricSpec("relay_segment_latency_ms", "histogram", "segment time inside the tier",
                             ("tier",))
HANDOFF_OVERHEAD = MetricSpec("relay_handoff_overhead_ms", "histogram",
                              "controller + transport time of a segment outside the tier", ("tier",))
PREFIX_PROMPT_TOKENS = MetricSpec("relay_prefix_prompt_tokens_total", "counter",
                                  "prefix tokens sent to tiers", ("tier",))
PREFIX_CACHED_TOKENS = MetricSpec("relay_prefix_cached_tokens_total", "counter",
                                  "prefix tokens served from the tier's prefix cache", ("tier",))
PREFIX_HIT_RATIO = MetricSpec("relay_prefix_cache_hit_ratio", "gauge",
                              "cached / prompt prefix tokens seen by this controller replica", ("tier",))
INFLIGHT_SEGMENTS = MetricSpec("relay_inflight_segments", "gauge", "segment jobs in flight", ("tier",))
DEMAND_TOKENS_PER_S = MetricSpec("relay_demand_tokens_per_s", "gauge",
                                 "tokens written per second per tier (sliding window)", ("tier",))
SWITCHES_PER_S = MetricSpec("relay_switches_per_s", "gauge", "tier switches per second (sliding window)", ())
MIGRATIONS = MetricSpec("relay_migrations_total", "counter",
                        "segments re-run on a healthy replica after a tier fault", ("tier", "cause"))

ALL = (REQUESTS, SEGMENTS, SWITCHES, TOKENS, SEGMENT_LATENCY, HANDOFF_OVERHEAD, PREFIX_PROMPT_TOKENS,
       PREFIX_CACHED_TOKENS, PREFIX_HIT_RATIO, INFLIGHT_SEGMENTS, DEMAND_TOKENS_PER_S, SWITCHES_PER_S, MIGRATIONS)
# Exported only once something happens (no fault, no series): not required on a scrape.
ON_EVENT = (MIGRATIONS,)


APPLICATION_TAG = "application"


class RayMetrics:
    """Creates the Ray metric objects (in the process that records them), tagged with the
    Serve ``application`` they belong to."""

    def __init__(self, application: str = "") -> None:
        from ray.util import metrics as m

        self._by_name = {}
        default_tags = {APPLICATION_TAG: application}
        for spec in ALL:
            tag_keys = (*spec.tag_keys, APPLICATION_TAG)
            if spec.kind == "counter":
                metric = m.Counter(spec.name, spec.description, tag_keys)
            elif spec.kind == "histogram":
                metric = m.Histogram(spec.name, spec.description, LATENCY_BOUNDARIES_MS, tag_keys)
            else:
                metric = m.Gauge(spec.name, spec.description, tag_keys)
            self._by_name[spec.name] = metric.set_default_tags(default_tags)

    def inc(self, spec: MetricSpec, value: float = 1.0, **tags: str) -> None:
        if value:
            self._by_name[spec.name].inc(value, tags=tags or None)

    def observe(self, spec: MetricSpec, value: float, **tags: str) -> None:
        self._by_name[spec.name].observe(value, tags=tags or None)

    def set(self, spec: MetricSpec, value: float, **tags: str) -> None:
        self._by_name[spec.name].set(value, tags=tags or None)
