"""RelayGen: the large model drives and hands easy sentences to the small model.

Rules (reference: RelayGen ``relaygen_chat_completions``): the large model writes until it
emits a calibrated cue (kept in the output; no cue is honoured in the first
``min_tokens_after_return`` tokens of a large segment, which prevents the "So-loop"); the
small model then finishes that sentence and stops at the first sentence end (kept); after
``</think>`` the small model writes the whole answer. If the budget runs out inside an
open ``<think>``, ``\\n</think>`` is appended (counted as one token). With
``offload_sentences=false`` the policy is answer-phase offload only: the large model writes the
whole trace and the small model everything after ``</think>``.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from relay_ray.policies.base import Policy, PolicyParams, SegmentPlan, Transition
from relay_ray.state import RelayState
from relay_ray.types import THINK_END, FinishReason, Phase, SegmentResult, StopRule, Tier

# Calibrated for Qwen3-1.7B <-> Qwen3-32B by the RelayGen authors (AMC 2023).
QWEN3_CUES = (
    "Oh,", "another,", "Thus", "Now", "Alternatively", "alternatively,", "Thus,", "Therefore",
    "similarly", "similarly,", "now", "Again", "specifically,", "Again,", "Similarly,", "Now,",
    "Specifically,", "Hence", "Similarly", "Other", "now,", "hence", "Specifically", "So ",
    "Therefore,", "Wait,", "Also", "So,",
)
SENTENCE_ENDS = (".", "!", "?", "\n\n")


def _non_empty_strings(value: tuple[str, ...], what: str) -> tuple[str, ...]:
    if not value:
        raise ValueError(f"at least one {what} is required")
    if any(not s for s in value):
        raise ValueError(f"{what}s must be non-empty strings")
    return value


class RelayGenParams(PolicyParams):
    cues: tuple[str, ...] = Field(QWEN3_CUES, description="strings after which the small model takes over")
    sentence_ends: tuple[str, ...] = Field(SENTENCE_ENDS, description="where the small model hands back")
    min_tokens_after_return: int = Field(5, ge=0, le=1024, description="large tokens before a cue counts")
    small_writes_answer: bool = Field(True, description="after </think> the small model writes the answer")
    cue_word_start: bool = Field(True, description="a cue must start a word ('now' not inside 'know')")
    offload_sentences: bool = Field(True, description="hand the sentence after a cue to the small model "
                                                      "(false: only the answer after </think> is offloaded)")

    @field_validator("cues")
    @classmethod
    def _check_cues(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _non_empty_strings(v, "cue")

    @field_validator("sentence_ends")
    @classmethod
    def _check_ends(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _non_empty_strings(v, "sentence end")


class RelayGenPolicy(Policy):
    name = "relaygen"
    Params = RelayGenParams
    params: RelayGenParams
    closes_think_on_budget = True

    def initial_tier(self) -> Tier:
        return Tier.LARGE

    def plan(self, state: RelayState) -> SegmentPlan:
        budget = self.budget(state)
        p = self.params
        if state.phase is Phase.ANSWER:
            tier = Tier.SMALL if p.small_writes_answer else Tier.LARGE
            return SegmentPlan(tier, StopRule(max_new_tokens=budget))
        if state.tier is Tier.LARGE:
            stop = StopRule(
                max_new_tokens=budget,
                min_new_tokens=min(p.min_tokens_after_return, budget),
                stop_strings=(THINK_END, *p.cues) if p.offload_sentences else (THINK_END,),
                word_start=p.cue_word_start,
            )
        else:
            stop = StopRule(max_new_tokens=budget, stop_strings=(THINK_END, *p.sentence_ends))
        return SegmentPlan(state.tier, stop)

    def transition(self, state: RelayState, plan: SegmentPlan, result: SegmentResult) -> Transition:
        if state.phase is Phase.ANSWER or THINK_END in result.text:
            return Transition(Tier.SMALL if self.params.small_writes_answer else Tier.LARGE)
        if result.finish_reason is FinishReason.STOP_STRING:
            return Transition(plan.tier.other)
        return Transition(plan.tier)
