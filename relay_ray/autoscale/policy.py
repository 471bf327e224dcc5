"""How many replicas a tier needs, from the demand it sees. Pure: the time is passed in.

Load is measured in replicas: in-flight segment jobs over the target per replica, or
decoded tokens per second over a replica's usable capacity, whichever is larger. Two
guards keep noisy demand from flapping the count: a band (go down to k replicas only when
the load fits k with the hysteresis margin) and delays (a change is applied only after it
has been wanted continuously for ``upscale_delay_s`` / ``downscale_delay_s``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

INFLIGHT_METRIC = "inflight_segments"
TOKENS_METRIC = "decode_tokens_per_s"


class TierScalingParams(BaseModel):
    """Autoscaling of one tier; validated where the config is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(1, ge=0, le=4096)
    max_replicas: int = Field(4, ge=1, le=4096)
    target_inflight_segments: float = Field(4.0, gt=0, description="segment jobs one replica should carry")
    capacity_tokens_per_s: float | None = Field(
        None, gt=0, description="decode tokens/s one replica sustains (measure with `relay-ray bench`)")
    target_utilization: float = Field(0.8, gt=0, le=1, description="share of capacity to plan for")
    hysteresis: float = Field(0.25, ge=0, lt=1, description="scale down only below (1 - hysteresis) of a replica")
    upscale_delay_s: float = Field(5.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)
    look_back_period_s: float = Field(15.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> TierScalingParams:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


@dataclass(frozen=True, slots=True)
class TierLoad:
    """Demand on a tier, summed over its replicas."""

    inflight_segments: float = 0.0
    decode_tokens_per_s: float = 0.0

    @classmethod
    def from_replicas(cls, inflight: Iterable[float], tokens_per_s: Iterable[float]) -> TierLoad:
        return cls(sum(inflight), sum(tokens_per_s))


def load_in_replicas(load: TierLoad, params: TierScalingParams) -> float:
    by_inflight = load.inflight_segments / params.target_inflight_segments
    by_tokens = 0.0
    if params.capacity_tokens_per_s:
        by_tokens = load.decode_tokens_per_s / (params.capacity_tokens_per_s * params.target_utilization)
    return max(by_inflight, by_tokens)


def desired_replicas(load: TierLoad, current: int, params: TierScalingParams) -> int:
    """The replica count for ``load`` given ``current`` replicas (with hysteresis)."""
    need = load_in_replicas(load, params)
    if need > current:
        target = math.ceil(need - 1e-9)
    else:
        # Going down to k replicas requires the load to fit k with a margin.
        target = current
        while target > 0 and need <= (target - 1) * (1 - params.hysteresis):
            target -= 1
    return max(params.min_replicas, min(params.max_replicas, target))


def decide(load: TierLoad, current: int, params: TierScalingParams, state: dict, now_s: float) -> tuple[int, dict]:
    """Apply the delays: returns (replicas to run, new policy state)."""
    desired = desired_replicas(load, current, params)
    if desired == current:
        return current, {}
    direction = "up" if desired > current else "down"
    since = state.get("since_s", now_s) if state.get("direction") == direction else now_s
    delay = params.upscale_delay_s if direction == "up" else params.downscale_delay_s
    if now_s - since >= delay:
        return desired, {}
    return current, {"direction": direction, "since_s": since, "wanted": desired}
