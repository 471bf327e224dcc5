"""RelayLLM: the small model drives and asks for help with ``<call>n</call>``.

The small model stops right after ``</call>``; the command is parsed
(``<call>\\s*(\\d+)\\s*</call>``) and the segment's text is cut at its *first* ``<call>``
(the tokens overlapping it and everything after are dropped: an unfinished command earlier in
the segment goes with the well-formed one, as in RelayLLM's RL rollout, where the large model
continues from the text before the first call tag); then the large model writes ``n`` tokens
and control returns to the small model. ``n = 0`` or a malformed command (no well-formed one
ends the segment) hands nothing over and the latter stays in the text; ``min_call_tokens``
raises a smaller ``n`` (the large model writes past the span the caller asked for). After
``max_calls`` commands the small model is no longer stopped at ``</call>`` (bounding call
loops).
"""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from relay_ray.policies.base import Policy, PolicyParams, SegmentPlan, Transition
from relay_ray.state import RelayState
from relay_ray.types import CALL_CLOSE, CALL_OPEN, FinishReason, SegmentResult, StopRule, Tier

# A well-formed command at the end of a segment's text; group 1 is n.
CALL_RE = re.compile(rf"{re.escape(CALL_OPEN)}\s*(\d+)\s*{re.escape(CALL_CLOSE)}\s*$")


class RelayLLMParams(PolicyParams):
    max_calls: int = Field(4, ge=0, le=1024, description="commands honoured per request")
    max_call_tokens: int = Field(1024, ge=1, le=65536, description="cap on n of one command")
    min_call_tokens: int = Field(1, ge=1, le=65536, description="floor on n of a command with n >= 1")

    @model_validator(mode="after")
    def _floor_within_cap(self) -> RelayLLMParams:
        if self.min_call_tokens > self.max_call_tokens:
            raise ValueError(f"min_call_tokens ({self.min_call_tokens}) must not exceed max_call_tokens "
                             f"({self.max_call_tokens})")
        return self


class RelayLLMPolicy(Policy):
    name = "relayllm"
    Params = RelayLLMParams
    params: RelayLLMParams

    def initial_tier(self) -> Tier:
        return Tier.SMALL

    def plan(self, state: RelayState) -> SegmentPlan:
        if state.tier is Tier.LARGE:
            n = int(state.memo.get("pending_call_tokens", 1))
            return SegmentPlan(Tier.LARGE, StopRule(max_new_tokens=self.budget(state, n)))
        calls_left = int(state.memo.get("num_calls", 0)) < self.params.max_calls
        # A command is removed from the text once complete, so a stream must not show it early.
        stop = StopRule(max_new_tokens=self.budget(state), stop_strings=(CALL_CLOSE,) if calls_left else (),
                        retract_string=CALL_OPEN if calls_left else "")
        return SegmentPlan(Tier.SMALL, stop)

    def transition(self, state: RelayState, plan: SegmentPlan, result: SegmentResult) -> Transition:
        if plan.tier is Tier.LARGE:
            return Transition(Tier.SMALL, memo={"pending_call_tokens": 0})
        if result.finish_reason is not FinishReason.STOP_STRING:
            return Transition(Tier.SMALL)
        num_calls = int(state.memo.get("num_calls", 0)) + 1
        match = CALL_RE.search(result.text)
        if match is None:  # malformed: leave the text, count it so a loop stays bounded
            return Transition(Tier.SMALL, memo={"num_calls": num_calls})
        # The first <call>, not the matched one: a caller that opened a command, wrote text
        # instead of a number, then a well-formed command, asked for help at the first one.
        call_at = result.text.find(CALL_OPEN)
        num_kept = sum(1 for end in result.text_offsets if end <= call_at)
        n = int(match.group(1))
        if n > 0:  # a floor gives the large model room past the caller's span; n = 0 asks nothing
            n = min(max(n, self.params.min_call_tokens), self.params.max_call_tokens)
        memo = {"num_calls": num_calls, "pending_call_tokens": n}
        return Transition(Tier.LARGE if n > 0 else Tier.SMALL, num_kept=num_kept, memo=memo)
