"""Baselines: one tier writes everything."""

from __future__ import annotations

from relay_ray.policies.base import Policy, SegmentPlan, Transition
from relay_ray.state import RelayState
from relay_ray.types import SegmentResult, StopRule, Tier


class _SingleTierPolicy(Policy):
    tier: Tier
    switches_tiers = False

    def initial_tier(self) -> Tier:
        return self.tier

    def plan(self, state: RelayState) -> SegmentPlan:
        return SegmentPlan(self.tier, StopRule(max_new_tokens=self.budget(state)))

    def transition(self, state: RelayState, plan: SegmentPlan, result: SegmentResult) -> Transition:
        return Transition(self.tier)


class LargeOnlyPolicy(_SingleTierPolicy):
    """The large model writes the whole answer."""

    name = "large-only"
    tier = Tier.LARGE


class SmallOnlyPolicy(_SingleTierPolicy):
    """The small model writes the whole answer."""

    name = "small-only"
    tier = Tier.SMALL
