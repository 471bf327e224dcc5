"""R-Stitch: the small model drives; uncertain tokens go to the large model.

The small model writes while its normalized entropy H/log V stays at or below ``tau``; the
first token above ``tau`` is *not* kept and the large model writes that position instead.
The large model keeps writing until one of its tokens has entropy below ``tau`` (that
token is kept), then the small model resumes. One threshold serves both directions.
"""

from __future__ import annotations

from pydantic import Field

from relay_ray.policies.base import Policy, PolicyParams, SegmentPlan, Transition
from relay_ray.state import RelayState
from relay_ray.types import Commit, EntropyRule, FinishReason, SegmentResult, StopRule, Tier


class RStitchParams(PolicyParams):
    tau: float = Field(0.3, ge=0.0, le=1.0, description="normalized-entropy threshold in [0, 1]")


class RStitchPolicy(Policy):
    name = "rstitch"
    Params = RStitchParams
    params: RStitchParams

    def initial_tier(self) -> Tier:
        return Tier.SMALL

    def plan(self, state: RelayState) -> SegmentPlan:
        tau = self.params.tau
        if state.tier is Tier.SMALL:
            rule = EntropyRule(tau, above=True, commit=Commit.EXCLUSIVE)
        else:
            rule = EntropyRule(tau, above=False, commit=Commit.INCLUSIVE)
        stop = StopRule(max_new_tokens=self.budget(state), entropy=rule)
        return SegmentPlan(state.tier, stop)  # the rule needs no signals back (tiers may run it in-engine)

    def transition(self, state: RelayState, plan: SegmentPlan, result: SegmentResult) -> Transition:
        if result.finish_reason is FinishReason.ENTROPY:
            return Transition(plan.tier.other)
        return Transition(plan.tier)
