"""Telemetry of the relay loop over scripted tiers: span tree, switch rates, config checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from relay_ray.controller import RelayController
from relay_ray.telemetry import metrics as M
from relay_ray.telemetry.observer import TelemetryObserver
from relay_ray.telemetry.tracing import TracingConfig, tracing_env
from relay_ray.types import Tier
from tests.unit.fakes import ScriptedTier
from tests.unit.test_relay_policies import DOC, VOCAB, run

ROOT = Path(__file__).resolve().parents[2]
_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracer_provider():
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)  # once per process
    yield


def test_request_and_segment_spans():
    _EXPORTER.clear()
    observer = TelemetryObserver()
    controller = RelayController({t: ScriptedTier(t, VOCAB, DOC) for t in Tier}, observer=observer)
    result, _ = run(controller, "fixed-ratio", {"large_tokens": 3, "small_tokens": 2})
    spans = _EXPORTER.get_finished_spans()
    (request,) = [s for s in spans if s.name == "relay.request"]
    segments = [s for s in spans if s.name.startswith("relay.segment")]
    assert len(segments) == len(result.segments)
    assert all(s.parent.span_id == request.context.span_id for s in segments)
    assert {s.context.trace_id for s in spans} == {request.context.trace_id}
    assert [s.attributes["relay.tier"] for s in segments] == [r.tier.value for r in result.segments]
    assert request.attributes["relay.switches"] == result.stats.num_switches
    rates = observer.rates()
    assert rates["demand_tokens_per_s_large"] == pytest.approx(result.stats.tokens_by_tier[Tier.LARGE] / 10)
    assert rates["switches_per_s"] == pytest.approx(result.stats.num_switches / 10)
    assert observer.inflight == {Tier.LARGE: 0, Tier.SMALL: 0}


def test_tracing_config_is_checked_and_sets_serve_env(tmp_path):
    with pytest.raises(ValidationError, match="otlp_endpoint"):
        TracingConfig(exporter="otlp")
    with pytest.raises(ValidationError, match="sampling_ratio"):
        TracingConfig(exporter="console", sampling_ratio=2)
    assert tracing_env(TracingConfig()) == {}
    env = tracing_env(TracingConfig(exporter="file", file_path=str(tmp_path / "s.jsonl"), sampling_ratio=0.5))
    assert env["RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH"] == "relay_ray.telemetry.tracing:span_processors"
    assert env["RAY_SERVE_TRACING_SAMPLING_RATIO"] == "0.5"


def test_dashboard_shows_every_metric():
    dashboard = (ROOT / "cluster" / "grafana-relay.json").read_text()
    json.loads(dashboard)
    for spec in M.ALL:
        assert f"ray_{spec.name}" in dashboard, spec.name
