"""The bench's arithmetic (ideal time, efficiency, handoff split), its scenarios and targets,
and the controller CPU micro-benchmark."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from relay_ray.bench import controller_cpu, report
from relay_ray.bench.runner import Handoff, Run, Sample
from relay_ray.bench.scenarios import LARGE_ONLY, SMALL_ONLY, fixed_ratio, num_requests, relay_matrix
from relay_ray.bench.targets import targets_for
from relay_ray.config import RelayConfig, SpeculativeConfig, TierConfig


def _sample(latency, n_large, n_small, large_steps=(), small_steps=(), handoffs=(), first_large=True):
    return Sample(latency, n_large, n_small, first_large, list(large_steps), list(small_steps), list(handoffs), 0)


def test_tier_cost_separates_per_token_time_from_the_fixed_cost():
    run = Run(LARGE_ONLY, 1, [_sample(10 + 99 * 40.0, 100, 0, [40.0]), _sample(12 + 99 * 40.0, 100, 0, [40.0])], 1.0)
    cost = report.TierCost.of(run, large=True)
    assert cost.ms_per_token == 40.0
    assert cost.fixed_ms == pytest.approx(10.0)


def test_tier_cost_is_the_fastest_request_so_the_ideal_is_a_lower_bound():
    fast, slow = _sample(10 + 99 * 38.0, 100, 0, [38.0]), _sample(30 + 99 * 45.0, 100, 0, [45.0])
    cost = report.TierCost.of(Run(LARGE_ONLY, 1, [slow, fast, slow], 1.0), large=True)
    assert (cost.ms_per_token, cost.fixed_ms) == (38.0, pytest.approx(10.0))
    small = report.TierCost(4.0, 5.0)
    for s in (fast, slow):  # no single-tier request is faster than its ideal
        assert report.ideal_ms(s, cost, small) <= s.latency_ms + 1e-9
    with pytest.raises(ValueError, match="more than one token"):
        report.TierCost.of(Run(LARGE_ONLY, 1, [_sample(5.0, 1, 0)], 1.0), large=True)


def test_ideal_and_efficiency_of_a_relay_request():
    large, small = report.TierCost(40.0, 100.0), report.TierCost(4.0, 20.0)
    # large first: fixed 100 + 7 more large tokens + 24 small tokens
    s = _sample(latency=600.0, n_large=8, n_small=24)
    assert report.ideal_ms(s, large, small) == pytest.approx(100 + 7 * 40 + 24 * 4)
    baseline = Run(LARGE_ONLY, 1, [_sample(1340.0, 32, 0)], 1.0)
    hand = [Handoff(True, 0.1, 3.0, 1.0, 60.0, 300, 288), Handoff(False, 0.1, 3.0, 0.5, 6.0, 320, 320)]
    relay = Run(fixed_ratio(0.25, 32), 1, [_sample(600.0, 8, 24, handoffs=hand)], 2.0)
    row = report.summarize("t", relay, large, small, baseline)
    assert row.efficiency == pytest.approx((100 + 7 * 40 + 24 * 4) / 600.0)
    assert row.speedup == pytest.approx(1340.0 / 600.0)
    assert row.large_share == pytest.approx(0.25)
    assert row.handoff_into_large_p50_ms == pytest.approx(64.1)
    assert row.cached_share == pytest.approx((288 + 320) / (300 + 320))
    assert row.tokens_per_s == pytest.approx(16.0)
    assert "relay 25% 8/24" in report.latency_table([row]) and "64.1" in report.handoff_table([row])


def test_fixed_ratio_patterns_hit_their_shares_and_lengths():
    labels = {s.label: s for s in relay_matrix()}
    assert labels["relay 25% 8/24"].params == {"large_tokens": 8, "small_tokens": 24}
    assert labels["relay 25% 32/96"].params == {"large_tokens": 32, "small_tokens": 96}
    assert labels["relay 4% 1/26"].params == {"large_tokens": 1, "small_tokens": 26}  # R-Stitch-like
    assert all(abs(s.large_share - share) < 0.02 for s, share in zip(relay_matrix(), (0.25, 0.25, 0.7, 0.7)))
    assert not LARGE_ONLY.is_relay and not SMALL_ONLY.is_relay and labels["relay 70% 22/10"].is_relay
    assert num_requests(1, 4) == 4 and num_requests(16, 4) == 32


def _config() -> RelayConfig:
    return RelayConfig(large=TierConfig(model="L", cpu_threads_bind="0"),
                       small=TierConfig(model="S", cpu_threads_bind="1"))


def test_peers_use_the_same_two_cores_as_the_relay():
    relay, tp2, x2, spec, both = targets_for("bench", _config())
    assert tp2.config.large.tensor_parallel_size == 2 and tp2.config.large.cpu_threads_bind == "0|1"
    assert both.is_relay and both.config.large.speculative.model == "S" and both.config.small.speculative is None
    assert relay.is_relay and not x2.is_relay
    assert x2.config.large.num_replicas == 2 and x2.config.large.request_router == "balanced"
    assert relay.config.large.request_router == "affinity"
    assert [x2.config.large.for_replica(r).cpu_threads_bind for r in range(2)] == ["0", "1"]
    assert spec.config.large.speculative.model == "S"
    assert spec.config.large.speculative.engine_config() == {"model": "S", "num_speculative_tokens": 4}
    assert len(targets_for("bench", _config(), peers=False)) == 1


def test_speculative_config_is_validated():
    with pytest.raises(ValidationError, match="draft model"):
        SpeculativeConfig(method="draft")
    with pytest.raises(ValidationError, match="prompt_lookup_min"):
        SpeculativeConfig(method="ngram", prompt_lookup_min=5, prompt_lookup_max=3)
    assert SpeculativeConfig(method="ngram").engine_config()["method"] == "ngram"


def test_controller_cpu_micro_benchmark_counts_segments():
    rows = {r.policy: r for r in controller_cpu.run(num_requests=5, max_new_tokens=64, record_spans=False)}
    assert set(rows) == set(controller_cpu.POLICIES)
    # fixed-ratio 8/24 over 64 tokens: L8 S24 L8 S24, 4 segments per request, exactly
    assert rows["fixed-ratio 8/24"].num_segments == 5 * 4
    for r in rows.values():
        assert r.num_segments > 5 * 2  # every policy here switches more than once per request
        # CPU per segment: measured (not zero) and far below a millisecond on any machine we run
        assert 0.0 < r.controller_cpu_ms_per_segment < 5.0
        assert 0.0 < r.tier_cpu_ms_per_segment < 5.0


def test_throughput_table_pairs_relay_rows_with_the_two_core_peer():
    large, small = report.TierCost(40.0, 100.0), report.TierCost(4.0, 20.0)
    base = Run(LARGE_ONLY, 16, [_sample(1000.0, 32, 0)] * 4, 2.0)
    relay = Run(fixed_ratio(0.25, 32), 16, [_sample(400.0, 8, 24)] * 4, 1.0)
    slower = Run(LARGE_ONLY, 16, [_sample(1000.0, 32, 0)] * 4, 4.0)
    rows = [report.summarize("bench", relay, large, small, base),
            report.summarize("bench large x2", base, large, small, base),
            report.summarize("bench large tp2", slower, large, small, base)]
    table = report.throughput_table(rows, "bench")
    assert "2.00x" in table and "large x2" in table  # 128 tok/s vs the faster peer's 64 tok/s
    assert report.throughput_table(rows, "demo") == ""


def test_tier_router_option_reaches_the_deployment():
    from relay_ray.serve.builder import tier_deployment_options
    from relay_ray.types import Tier

    affinity = tier_deployment_options(Tier.LARGE, TierConfig(model="L"))
    balanced = tier_deployment_options(Tier.LARGE, TierConfig(model="L", request_router="balanced"))
    assert "ConsistentHashRouter" in affinity["request_router_config"]["request_router_class"]
    assert "request_router_config" not in balanced
