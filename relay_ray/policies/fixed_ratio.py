"""Baseline: alternate fixed-length segments between the tiers."""

from __future__ import annotations

from pydantic import Field

from relay_ray.policies.base import Policy, PolicyParams, SegmentPlan, Transition
from relay_ray.state import RelayState
from relay_ray.types import SegmentResult, StopRule, Tier


class FixedRatioParams(PolicyParams):
    large_tokens: int = Field(24, ge=1, le=65536, description="tokens per large segment")
    small_tokens: int = Field(8, ge=1, le=65536, description="tokens per small segment")
    first: Tier = Field(Tier.LARGE, description="tier that writes the first segment")


class FixedRatioPolicy(Policy):
    """Segments of ``large_tokens`` and ``small_tokens`` alternate; the large share is
    ``large_tokens / (large_tokens + small_tokens)``."""

    name = "fixed-ratio"
    Params = FixedRatioParams
    params: FixedRatioParams

    def initial_tier(self) -> Tier:
        return self.params.first

    def plan(self, state: RelayState) -> SegmentPlan:
        limit = self.params.large_tokens if state.tier is Tier.LARGE else self.params.small_tokens
        return SegmentPlan(state.tier, StopRule(max_new_tokens=self.budget(state, limit)))

    def transition(self, state: RelayState, plan: SegmentPlan, result: SegmentResult) -> Transition:
        return Transition(plan.tier.other)
