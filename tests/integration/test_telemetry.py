"""Tracing and metrics of a relayed request on the real Serve application."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from relay_ray.client import build_request
from relay_ray.telemetry import metrics as M
from relay_ray.v1 import common_pb2

pytestmark = pytest.mark.integration
TIER_NAMES = {common_pb2.TIER_LARGE: "large", common_pb2.TIER_SMALL: "small"}


def _spans(path, trace_id: str, want: int, timeout_s: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        spans = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        spans = [s for s in spans if s["trace_id"] == trace_id]
        if len([s for s in spans if s["name"].startswith("tier.segment")]) >= want or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def test_one_trace_from_the_client_through_controller_to_tiers(relay_server, pair_client):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    response = pair_client.generate(
        build_request("So we add 12 and 30.", "fixed-ratio", {"large_tokens": 5, "small_tokens": 3},
                      max_new_tokens=24),
        metadata=(("traceparent", traceparent),),
    )
    spans = _spans(relay_server.trace_file, trace_id, want=len(response.segments))
    by_id = {s["span_id"]: s for s in spans}
    (request_span,) = [s for s in spans if s["name"] == "relay.request"]
    assert request_span["attributes"]["relay.policy"] == "fixed-ratio"
    assert request_span["attributes"]["relay.switches"] == response.stats.num_switches
    segment_spans = sorted((s for s in spans if s["name"].startswith("relay.segment")),
                           key=lambda s: s["attributes"]["relay.segment_index"])
    assert len(segment_spans) == len(response.segments)
    for span, seg in zip(segment_spans, response.segments):
        attrs = span["attributes"]
        assert span["parent_id"] == request_span["span_id"]
        assert attrs["relay.tier"] == TIER_NAMES[seg.tier] and attrs["relay.replica"] == seg.replica_id
        assert attrs["relay.new_tokens"] == seg.num_tokens and attrs["relay.stop_reason"] == "length"
        for key in ("relay.cached_prefix_tokens", "relay.queue_ms", "relay.prefill_ms", "relay.decode_ms",
                    "relay.handoff_ms"):
            assert key in attrs
        # The engine core's timestamps split the prefill: they share the tier's clock.
        split = attrs["relay.engine_in_ms"] + attrs["relay.engine_step_ms"] + attrs["relay.engine_out_ms"]
        assert attrs["relay.engine_step_ms"] > 0 and split == pytest.approx(attrs["relay.prefill_ms"], abs=1.0)
    # Tier replica spans hang below the segment spans (through Serve's handle spans).
    tier_spans = [s for s in spans if s["name"].startswith("tier.segment")]
    assert len(tier_spans) == len(response.segments)
    segment_ids = {s["span_id"] for s in segment_spans}
    for span in tier_spans:
        ancestor = span
        while ancestor and ancestor["span_id"] not in segment_ids:
            ancestor = by_id.get(ancestor["parent_id"])
        assert ancestor is not None, f"{span['name']} is not below a segment span"
    assert len({s["pid"] for s in spans}) >= 3  # proxy/controller/tier processes in one trace


APP = "edge"  # counters of policy rstitch: compared with a still baseline


def _scrape(url: str, application: str = APP) -> dict[tuple[str, str], float]:
    """relay metrics of one application, summed over replicas/workers, keyed by (name, labels)."""
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict[tuple[str, str], float] = {}
    for line in body.splitlines():
        match = re.match(r"^(ray_relay_\w+)\{(.*)\} ([0-9.e+-]+)$", line)
        if not match or f'application="{application}"' not in match.group(2).split(","):
            continue
        labels = ",".join(sorted(p for p in match.group(2).split(",")
                                 if p.split("=")[0] in ("policy", "tier", "from_tier", "to_tier", "le")))
        key = (match.group(1), labels)
        out[key] = out.get(key, 0.0) + float(match.group(3))
    return out


def _total(sample: dict, name: str, **labels: str) -> float:
    want = {f'{k}="{v}"' for k, v in labels.items()}
    return sum(v for (n, lab), v in sample.items() if n == name and want <= set(lab.split(",")))


# A shared context of several KV blocks, so that later requests hit the prefix cache.
CONTEXT = "We keep a ledger of every box, every apple and every sum we find along the way. " * 4


def test_metrics_count_what_the_responses_report(relay_server):
    keys = [("ray_relay_requests_total", ()), ("ray_relay_switches_total", ()),
            ("ray_relay_tokens_total", (("tier", "large"),)), ("ray_relay_segments_total", ())]

    def counted(sample: dict) -> dict:
        return {key: _total(sample, key[0], policy="rstitch", **dict(key[1])) for key in keys}

    # Counts are compared with a baseline taken once the app's counters are still (a request of
    # an earlier test on this app, e.g. the fuzzer's, may still be finishing or being exported).
    deadline, before = time.monotonic() + 90, None
    while True:
        current = counted(_scrape(relay_server.metrics_url))
        if current == before or time.monotonic() > deadline:
            break
        before = current
        time.sleep(11)  # longer than Ray's metrics export interval (10 s)
    switches = tokens_large = segments = 0
    with relay_server.client(APP) as client:
        for i in range(4):
            r = client.generate(build_request(f"{CONTEXT}So we add {i} and 9.", "rstitch", {"tau": 0.34},
                                              max_new_tokens=20))
            switches += r.stats.num_switches
            tokens_large += r.stats.large_tokens
            segments += r.stats.num_segments
    assert switches > 0  # the counts below must be able to differ from zero
    expected = dict(zip(keys, (4, switches, tokens_large, segments)))

    def moved(sample: dict) -> dict:
        return {key: value - before[key] for key, value in counted(sample).items()}

    # Ray exports metrics every few seconds: poll (bounded) until the export has caught up.
    deadline = time.monotonic() + 90
    while True:
        after = _scrape(relay_server.metrics_url)
        if moved(after) == expected or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert moved(after) == expected
    names = {name for name, _ in after}
    for spec in set(M.ALL) - set(M.ON_EVENT):
        exported = f"ray_{spec.name}" + ("_count" if spec.kind == "histogram" else "")
        assert exported in names, f"{spec.name} is not exported"
    ratio = _total(after, "ray_relay_prefix_cache_hit_ratio", tier="large") / max(
        1, sum(1 for n, lab in after if n == "ray_relay_prefix_cache_hit_ratio" and 'tier="large"' in lab))
    assert 0.0 <= ratio <= 1.0
