"""Ray Serve adapter: a class-based custom autoscaling policy per tier deployment.

Configured by the builder as ``autoscaling_config.policy = {"policy_function":
"relay_ray.autoscale.serve_policy:TierAutoscalingPolicy", "policy_kwargs": {...}}``
(Ray 2.60 ignores the older ``name`` key). Tier replicas report the metrics through
``record_autoscaling_stats``; Serve hands their time-averaged values to ``__call__``.
"""

from __future__ import annotations

from relay_ray.autoscale.policy import INFLIGHT_METRIC, TOKENS_METRIC, TierLoad, TierScalingParams, decide

POLICY_IMPORT_PATH = "relay_ray.autoscale.serve_policy:TierAutoscalingPolicy"


class TierAutoscalingPolicy:
    """Called on the Serve controller every control-loop tick with an AutoscalingContext."""

    def __init__(self, **params) -> None:
        self.params = TierScalingParams.model_validate(params)

    def __call__(self, ctx) -> tuple[int, dict]:
        metrics = ctx.aggregated_metrics or {}
        load = TierLoad.from_replicas(
            (metrics.get(INFLIGHT_METRIC) or {}).values(),
            (metrics.get(TOKENS_METRIC) or {}).values(),
        )
        # Decide against the count already asked for, not the replicas running yet: a new
        # replica takes a while to start, and a dip meanwhile must not cancel it.
        asked = getattr(ctx, "target_num_replicas", None) or ctx.current_num_replicas
        return decide(load, asked, self.params, dict(ctx.policy_state or {}), float(ctx.current_time))


def autoscaling_config(params: TierScalingParams) -> dict:
    """The Serve ``autoscaling_config`` of a tier deployment."""
    return {
        "min_replicas": params.min_replicas,
        "max_replicas": params.max_replicas,
        "initial_replicas": max(params.min_replicas, 1),
        # The policy applies the delays itself (relay_ray.autoscale.policy.decide).
        "upscale_delay_s": 0.0,
        "downscale_delay_s": 0.0,
        "look_back_period_s": params.look_back_period_s,
        "policy": {"policy_function": POLICY_IMPORT_PATH, "policy_kwargs": params.model_dump(mode="json")},
    }
