"""Per-tier autoscaling decisions on synthetic contexts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from pydantic import ValidationError

from relay_ray.autoscale.policy import TierLoad, TierScalingParams, desired_replicas
from relay_ray.autoscale.rates import SlidingRate
from relay_ray.autoscale.serve_policy import TierAutoscalingPolicy, autoscaling_config

PARAMS = dict(min_replicas=1, max_replicas=8, target_inflight_segments=4, capacity_tokens_per_s=100,
              target_utilization=0.8, hysteresis=0.25, upscale_delay_s=0, downscale_delay_s=30)


@dataclass
class FakeContext:
    """The parts of Serve's AutoscalingContext the policy reads."""

    current_num_replicas: int
    aggregated_metrics: dict
    policy_state: dict = field(default_factory=dict)
    current_time: float = 0.0
    target_num_replicas: int | None = None


def ctx(current: int, inflight: list[float], tokens: list[float], now: float = 0.0, state=None) -> FakeContext:
    return FakeContext(current, {"inflight_segments": dict(enumerate(inflight)),
                                 "decode_tokens_per_s": dict(enumerate(tokens))}, state or {}, now)


def run_two_tiers(large: TierAutoscalingPolicy, small: TierAutoscalingPolicy, replicas: dict, loads: dict) -> dict:
    out = {}
    for name, policy in (("large", large), ("small", small)):
        inflight, tokens = loads[name]
        n = replicas[name]
        out[name], _ = policy(ctx(n, [inflight / n] * n, [tokens / n] * n))
    return out


def test_demand_up_scales_that_tier_and_leaves_the_other():
    large, small = TierAutoscalingPolicy(**PARAMS), TierAutoscalingPolicy(**PARAMS)
    replicas = {"large": 1, "small": 1}
    # answer phases move work to the small tier: 20 in-flight segments, 300 tokens/s there
    out = run_two_tiers(large, small, replicas, {"large": (2, 40), "small": (20, 300)})
    assert out == {"large": 1, "small": 5}  # upscale_delay_s=0: at once


def test_token_rate_alone_can_drive_scale_up():
    policy = TierAutoscalingPolicy(**PARAMS)
    target, state = policy(ctx(1, [1.0], [250.0]))  # 250 / (100 * 0.8) = 3.1 replicas
    assert target == 4 and state == {}


def test_demand_down_scales_down_with_margin_and_respects_min():
    p = TierScalingParams(**PARAMS)
    assert desired_replicas(TierLoad(inflight_segments=4), current=4, params=p) == 2   # 1 replica of load
    assert desired_replicas(TierLoad(inflight_segments=0), current=4, params=p) == 1   # min_replicas
    assert desired_replicas(TierLoad(inflight_segments=400), current=2, params=p) == 8  # max_replicas


def test_scale_down_waits_for_the_delay_and_resets_on_a_spike():
    policy = TierAutoscalingPolicy(**PARAMS)
    state: dict = {}
    for now in (0, 10, 20, 29):  # demand gone, but not for 30 s yet
        target, state = policy(ctx(4, [0, 0, 0, 0], [0] * 4, now=now, state=state))
        assert target == 4
    target, state = policy(ctx(4, [4, 4, 4, 4], [0] * 4, now=29.5, state=state))  # a spike
    assert target == 4 and state == {}
    for now in (30, 45, 59):
        target, state = policy(ctx(4, [0] * 4, [0] * 4, now=now, state=state))
        assert target == 4
    target, _ = policy(ctx(4, [0] * 4, [0] * 4, now=60, state=state))
    assert target == 1


def test_a_dip_while_new_replicas_start_does_not_cancel_them():
    policy = TierAutoscalingPolicy(**PARAMS)
    target, state = policy(ctx(1, [8.0], [0.0], now=0))
    assert target == 2
    starting = ctx(1, [3.0], [0.0], now=2, state=state)  # one RUNNING, two asked for, load dips
    starting.target_num_replicas = 2
    assert policy(starting)[0] == 2


@pytest.mark.parametrize("mean_inflight,allowed", [
    (12.0, ([], [4])),  # 3 replicas of load, noise crosses 3: at most one step up, never back
    (10.0, ([],)),  # 2.5 replicas of load: noise stays inside the band, nothing moves
])
def test_no_flapping_under_noisy_demand(mean_inflight, allowed):
    """+-15% noise both ways, a tick every 2 s for 1000 s, through the policy Serve calls. No
    delays: the hysteresis band alone must hold the count (the delays are tested above)."""
    policy = TierAutoscalingPolicy(**{**PARAMS, "upscale_delay_s": 0, "downscale_delay_s": 0})
    rng = random.Random(0)
    replicas, state, changes = 3, {}, []
    for tick in range(500):
        inflight = mean_inflight * rng.uniform(0.85, 1.15)
        context = ctx(replicas, [inflight / replicas] * replicas, [0.0] * replicas, now=2.0 * tick, state=state)
        target, state = policy(context)
        if target != replicas:
            changes.append(target)
            replicas = target
    assert changes in allowed, f"replica count moved {len(changes)} times: {changes[:6]}"


def test_invalid_params_are_rejected_naming_the_field():
    with pytest.raises(ValidationError, match="min_replicas"):
        TierScalingParams(min_replicas=5, max_replicas=2)
    with pytest.raises(ValidationError, match="target_inflight_segments"):
        TierScalingParams(target_inflight_segments=0)
    with pytest.raises(ValidationError, match="hysteresis"):
        TierAutoscalingPolicy(hysteresis=1.5)


def test_serve_config_uses_policy_function_not_name():
    cfg = autoscaling_config(TierScalingParams(**PARAMS))
    assert cfg["policy"]["policy_function"].endswith(":TierAutoscalingPolicy") and "name" not in cfg["policy"]
    from ray.serve.config import AutoscalingConfig

    AutoscalingConfig.model_validate(cfg)  # Ray accepts it


def test_sliding_rate_forgets_old_events():
    now = [0.0]
    rate = SlidingRate(window_s=10, clock=lambda: now[0])
    for t in range(10):
        now[0] = float(t)
        rate.add(50)
    assert rate.per_second() == pytest.approx(50)
    now[0] = 25.0
    assert rate.per_second() == 0
