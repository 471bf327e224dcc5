"""The capacity model, the step-load cutting and the plan report (no Ray, no load)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from relay_ray.cli import main
from relay_ray.deploy.capacity import (
    CurvePoint,
    PolicyDemand,
    TierCurve,
    TierUnits,
    max_rate_at_slo,
    plan,
    predict,
    saturation_rate,
    switch_overhead_s,
    work_per_request,
)
from relay_ray.deploy.loadrun import RequestRow, percentile, step_stats
from relay_ray.deploy.measurements import Measurements
from relay_ray.deploy.placement import tier_units
from relay_ray.deploy.plan_command import parse_mix
from relay_ray.deploy.plan_measure import measured_max_at_slo
from relay_ray.errors import RelayInputError

ROOT = Path(__file__).resolve().parents[2]

# A tier whose throughput doubles from 1 to 2 users, then flattens; latency per token grows.
LARGE = TierCurve("large", 1, (CurvePoint(1, 10.0, 0.11, 0.10), CurvePoint(2, 20.0, 0.11, 0.10),
                               CurvePoint(4, 25.0, 0.18, 0.16)))
SMALL = TierCurve("small", 2, (CurvePoint(1, 100.0, 0.011, 0.010), CurvePoint(4, 300.0, 0.015, 0.013)))
CURVES = {"large": LARGE, "small": SMALL}
MIX = [PolicyDemand("fixed-ratio", 2, {"large": 16, "small": 48}, switches=7, latency_s=2.5),
       PolicyDemand("small-only", 1, {"small": 64}, latency_s=0.64)]


def test_operating_point_interpolates_and_stops_at_the_top():
    assert LARGE.operating_point(5.0).s_per_token_p95 == pytest.approx(0.11)  # below one user: one stream
    mid = LARGE.operating_point(22.5)
    assert mid.users_per_replica == pytest.approx(3.0) and mid.s_per_token_p95 == pytest.approx(0.145)
    assert LARGE.operating_point(25.0).utilization == pytest.approx(1.0)
    assert LARGE.operating_point(25.1) is None
    # Measured with 2 replicas: per replica, half the deployment's throughput.
    assert SMALL.max_tokens_per_s_per_replica == 150.0
    assert SMALL.operating_point(100.0).s_per_token_p95 == pytest.approx(0.013)


def test_points_past_the_throughput_peak_are_ignored():
    curve = TierCurve("large", 1, (CurvePoint(1, 10, 0.1, 0.1), CurvePoint(2, 18, 0.12, 0.11),
                                   CurvePoint(4, 16, 0.3, 0.25)))
    assert curve.operating_point(17).s_per_token_p95 < 0.12
    assert curve.operating_point(18.5) is None


def test_switch_overhead_is_the_unexplained_latency_per_switch():
    # fixed-ratio at one user: 16 x 0.10 + 48 x 0.010 = 2.08 s explained, 2.5 s measured, 7 switches.
    assert switch_overhead_s(MIX, CURVES) == pytest.approx((2.5 - 2.08) / 7)


def test_prediction_per_policy_and_saturation():
    overhead = switch_overhead_s(MIX, CURVES)
    p = predict(0.5, MIX, CURVES, {"large": 1, "small": 1}, overhead)
    # Large demand: 0.5 x 16 x 2/3 = 5.33 tokens/s, small: 0.5 x (32 + 21.3) = 26.7 per replica
    # (53.3 in the 2-replica curve's terms): both below their first point (one stream's speed).
    assert p.feasible
    assert p.p95_s["fixed-ratio"] == pytest.approx(16 * 0.11 + 48 * 0.011 + 7 * overhead)
    assert p.p95_s["small-only"] == pytest.approx(64 * 0.011)
    busy = predict(0.5, MIX, CURVES, {"large": 1, "small": 1}, overhead)
    assert busy.tiers["small"].users_per_replica == pytest.approx(53.3 / 100 / 2, rel=1e-2)
    large_per_request = 16 * 2 / 3
    assert saturation_rate(MIX, CURVES, {"large": 1, "small": 1}) == pytest.approx(25 / large_per_request)
    assert not predict(25 / large_per_request * 1.01, MIX, CURVES, {"large": 1, "small": 1}, overhead).feasible


def test_prefill_counts_as_work_in_the_curves_terms():
    # The curve's own requests prefilled 0.5 tokens per generated token; fixed-ratio's large
    # segments prefill 30 tokens per request (the small tier's text), large-only's 8 per 16.
    curve = TierCurve("large", 1, LARGE.points, prefill_per_token=0.5)
    mix = [PolicyDemand("fixed-ratio", 1, {"large": 8, "small": 24}, prefill={"large": 30.0}),
           PolicyDemand("large-only", 1, {"large": 16}, prefill={"large": 8.0})]
    work = work_per_request(mix, curve)
    assert work == pytest.approx((0.5 * (8 + 30) + 0.5 * (16 + 8)) / 1.5)
    assert saturation_rate(mix, {"large": curve}, {"large": 1}) == pytest.approx(25 / work)
    # Counting generated tokens only (the former model) would promise 25 / 12 = 2.1 requests/s.
    assert 25 / work < 0.7 * 25 / 12
    free = TierCurve("large", 1, LARGE.points, prefill_per_token=0.5, prefill_cost=0.0)
    assert work_per_request(mix, free) == pytest.approx(12.0)  # prefill free: generated tokens only
    # Saved and loaded with the curve.
    m = Measurements({"large": curve}, mix, 0.0, 32)
    assert Measurements.from_json(m.to_json()).curves["large"].prefill_per_token == 0.5


def test_max_rate_at_slo_is_where_the_worst_policy_meets_it():
    overhead = switch_overhead_s(MIX, CURVES)
    replicas = {"large": 1, "small": 1}
    rate = max_rate_at_slo(MIX, CURVES, replicas, overhead, slo_p95_s=2.8)
    assert predict(rate, MIX, CURVES, replicas, overhead).worst_p95_s == pytest.approx(2.8, abs=1e-6)
    assert predict(rate * 1.01, MIX, CURVES, replicas, overhead).worst_p95_s > 2.8
    assert max_rate_at_slo(MIX, CURVES, replicas, overhead, slo_p95_s=1.0) == 0.0  # unloaded is already slower
    # Loose SLO: the tier's capacity is the limit.
    assert max_rate_at_slo(MIX, CURVES, replicas, overhead, 100.0) == pytest.approx(
        saturation_rate(MIX, CURVES, replicas))


def test_plan_picks_the_cheapest_counts_with_headroom():
    overhead = switch_overhead_s(MIX, CURVES)
    units = {"large": TierUnits("GPU", 4), "small": TierUnits("GPU", 0.25)}
    p = plan(MIX, CURVES, units, overhead, target_rps=10, slo_p95_s=3.0, headroom=0.2)
    assert p.planned_rps == pytest.approx(12)
    assert p.max_rate_rps >= 12 and p.prediction.worst_p95_s <= 3.0
    assert p.units == {"large": 4 * p.replicas["large"], "small": 0.25 * p.replicas["small"]}
    for tier in ("large", "small"):  # one replica fewer of either tier misses the target
        fewer = dict(p.replicas, **{tier: p.replicas[tier] - 1})
        if fewer[tier] >= 1:
            assert max_rate_at_slo(MIX, CURVES, fewer, overhead, 3.0) < 12
    assert plan(MIX, CURVES, units, overhead, target_rps=10, slo_p95_s=1.0) is None


def _row(start, end, users, policy="large-only", large=64, small=0, ok=True):
    return RequestRow(start, end, users, policy, ok, end - start, large + small, large, small)


def test_step_stats_cut_windows_and_count_completions():
    rows = [_row(100 + 2 * i, 102 + 2 * i, 1) for i in range(10)]  # 1 user: 2 s per request, 100..120
    rows += [_row(120 + 4 * i, 124 + 4 * i, 2) for i in range(5)] * 2  # 2 users: 4 s each, 120..140
    s1, s2 = step_stats(rows, [(1, 20), (2, 20)], warmup_s=4)
    assert s1.window_s == 16 and s1.completed == 8 and s1.requests_per_s == pytest.approx(0.5)
    assert s1.p95_s == pytest.approx(2.0) and s1.s_per_token_p95 == pytest.approx(2 / 64)
    assert s1.tier_tokens_per_s["large"] == pytest.approx(32.0)
    assert s2.completed == 8 and s2.requests_per_s == pytest.approx(0.5)  # ends 124..136 (x2) in [124, 140)
    assert s2.latency_requests == 8 and s2.p95_s == pytest.approx(4.0)  # started 124..136, done by 140


def test_percentile_is_nearest_rank():
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95) == 10
    assert percentile(list(range(1, 101)), 0.95) == 95
    assert math.isnan(percentile([], 0.5))


def test_measured_max_at_slo_interpolates_the_crossing():
    def step(users, rps, p95):
        return type("S", (), {"users": users, "requests_per_s": rps, "policy_p95_s": {"a": p95}})()

    rate, how = measured_max_at_slo([step(1, 1.0, 2.0), step(2, 1.8, 4.0), step(4, 2.2, 9.0)], slo_p95_s=6.5)
    assert rate == pytest.approx(1.8 + 0.5 * 0.4) and "between 2 and 4" in how
    rate, how = measured_max_at_slo([step(1, 1.0, 2.0), step(2, 1.8, 4.0)], slo_p95_s=10)
    assert rate == 1.8 and "lower bound" in how
    assert measured_max_at_slo([step(1, 1.0, 20.0)], slo_p95_s=10)[0] == 0.0


def test_parse_mix_names_unknown_policies():
    assert parse_mix("small-only:3,fixed-ratio") == {"small-only": 3.0, "fixed-ratio": 1.0}
    with pytest.raises(RelayInputError, match="nope"):
        parse_mix("nope:1")


def test_tier_units_gpus_or_shared_cores():
    from relay_ray.deploy.commands import _relay_configs

    (_, gpu), = _relay_configs(ROOT / "cluster" / "serve-gpu.yaml")
    assert tier_units(gpu, "large") == TierUnits("GPU", 4) and tier_units(gpu, "small") == TierUnits("GPU", 0.25)
    (_, local), = _relay_configs(ROOT / "cluster" / "serve-capacity-local.yaml")
    assert tier_units(local, "large") == TierUnits("core", 1) and tier_units(local, "small") == TierUnits("core", 0.5)


def test_plan_from_measurements_writes_the_report(tmp_path, capsys):
    m = Measurements(CURVES, MIX, switch_overhead_s(MIX, CURVES), 64, {"large": "assumed", "small": "assumed",
                                                                       "demand": "assumed"})
    path = tmp_path / "m.json"
    m.save(path)
    assert Measurements.load(path).to_json() == json.loads(path.read_text())
    rc = main(["plan", "--config", str(ROOT / "cluster" / "serve-gpu.yaml"), "--measurements", str(path),
               "--mix", "fixed-ratio:2,small-only:1", "--target-rps", "10", "--slo-p95-s", "3", "--out",
               str(tmp_path / "plan")])
    assert rc == 0
    report = (tmp_path / "plan" / "plan.md").read_text()
    assert "## Plan for 10 requests/s" in report and "GPU" in report and "assumed" in report
    for png in ("curves.png", "replicas.png"):
        assert (tmp_path / "plan" / png).read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["plan", "--config", str(ROOT / "cluster" / "serve-gpu.yaml"), "--measurements", str(path),
                 "--mix", "rstitch:1", "--out", str(tmp_path / "p2")]) == 2
    assert "rstitch" in capsys.readouterr().err
