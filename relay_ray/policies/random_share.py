"""Baseline: a seeded random router that targets a large-model token share.

Segment lengths are drawn from geometric distributions: large segments have mean
``mean_large_tokens`` and small segments mean ``mean_large_tokens * (1 - s) / s`` for the
target share ``s = large_share``, so the expected share of large-model tokens is ``s`` (the
first tier is drawn with probability ``s``). A segment has at least one token, so when that
small mean would fall below 1 it is 1 and the large mean grows to ``s / (1 - s)`` instead.

This is the random router RelayLLM compares against, matched to a relay policy on structure:
give it the large share the policy reached *and* the policy's mean large-segment length
(``relay-ray eval ... random:match=LABEL`` does both), and it writes about as many large
segments, hence switches, per answer (~``2 s T / m`` for a ``T``-token answer). Matched on the
share alone (default ``m = 4``), it would place one short large chunk per answer at a 2% share
and switch ~80 times at 78%.

Pure and reproducible: every draw comes from ``random.Random`` seeded with ``routing_seed``, the
request id and the segment index, so the same request (same ``request_id``) is routed the
same way every time and no state is kept between calls.
"""

from __future__ import annotations

import math
import random

from pydantic import Field

from relay_ray.policies.base import Policy, PolicyParams, SegmentPlan, Transition
from relay_ray.state import RelayState
from relay_ray.types import SegmentResult, StopRule, Tier


class RandomShareParams(PolicyParams):
    large_share: float = Field(0.5, ge=0.0, le=1.0, description="target share of large-model tokens")
    mean_large_tokens: float = Field(4.0, ge=1.0, le=65536, description="mean length of a large segment")
    routing_seed: int = Field(0, ge=0, description="routing seed (combined with the request id)")


def _geometric(rng: random.Random, mean: float) -> int:
    """A draw >= 1 from the geometric distribution with the given mean (>= 1)."""
    if mean <= 1.0:
        return 1
    p = 1.0 / mean
    return 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p))


class RandomSharePolicy(Policy):
    name = "random"
    Params = RandomShareParams
    params: RandomShareParams

    def _rng(self, request_id: str, segment_index: int) -> random.Random:
        return random.Random(f"{self.params.routing_seed}:{request_id}:{segment_index}")

    def initial_tier(self) -> Tier:
        # The request id is not known here; the first plan() re-draws the first tier.
        return Tier.LARGE if self.params.large_share >= 0.5 else Tier.SMALL

    def _tier_of_first_segment(self, state: RelayState) -> Tier:
        share = self.params.large_share
        return Tier.LARGE if self._rng(state.request_id, -1).random() < share else Tier.SMALL

    def mean_tokens(self, tier: Tier) -> float:
        """Mean segment length of ``tier`` that makes the expected large share the target."""
        s, m = self.params.large_share, self.params.mean_large_tokens
        if s >= 1.0:
            return math.inf if tier is Tier.LARGE else 1.0
        if s <= 0.0:
            return math.inf if tier is Tier.SMALL else 1.0
        small = m * (1.0 - s) / s
        if small < 1.0:  # segments are >= 1 token: stretch the large ones instead
            return s / (1.0 - s) if tier is Tier.LARGE else 1.0
        return m if tier is Tier.LARGE else small

    def plan(self, state: RelayState) -> SegmentPlan:
        tier = self._tier_of_first_segment(state) if state.num_segments == 0 else state.tier
        mean = self.mean_tokens(tier)
        if math.isinf(mean):
            return SegmentPlan(tier, StopRule(max_new_tokens=self.budget(state)))
        length = _geometric(self._rng(state.request_id, state.num_segments), mean)
        return SegmentPlan(tier, StopRule(max_new_tokens=self.budget(state, length)))

    def transition(self, state: RelayState, plan: SegmentPlan, result: SegmentResult) -> Transition:
        return Transition(plan.tier.other)
