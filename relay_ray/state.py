"""Per-request relay state, shared by policies (which read it) and the controller.

Immutable: every finished segment produces a new :class:`RelayState`, so policies stay
pure functions of (state, result).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from relay_ray.types import (
    THINK_END,
    THINK_START,
    FinishReason,
    HandoffMode,
    Phase,
    SegmentRecord,
    SegmentResult,
    Tier,
)
_EMPTY: Mapping = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Totals:
    """Counts of segments run before this state's ``segments`` (by another controller
    replica, before a resume); zero for a request that started here."""

    num_segments: int = 0
    num_switches: int = 0
    tokens: tuple[int, int] = (0, 0)  # committed (large, small)
    generated: tuple[int, int] = (0, 0)  # including dropped tokens
    last_tier: Tier | None = None


@dataclass(frozen=True, slots=True)
class RelayState:
    """Everything the relay loop knows about one request between segments.

    ``output_token_ids`` holds the committed output in token-id handoff mode (empty in
    text mode, where each tier tokenizes ``prompt_text + output_text`` itself).
    ``num_output_tokens`` counts committed tokens as the writing tiers counted them.
    ``memo`` is the policy's own small state (e.g. RelayLLM's pending call length).
    ``earlier`` counts the segments that ran before ``segments`` (a resumed request).
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    prompt_text: str
    max_new_tokens: int
    tier: Tier
    handoff: HandoffMode = HandoffMode.TOKEN_IDS
    phase: Phase = Phase.REASONING
    output_token_ids: tuple[int, ...] = ()
    output_text: str = ""
    num_output_tokens: int = 0
    segments: tuple[SegmentRecord, ...] = ()
    finish_reason: FinishReason | None = None
    memo: Mapping = field(default_factory=lambda: _EMPTY)
    earlier: Totals = Totals()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def remaining_tokens(self) -> int:
        return max(0, self.max_new_tokens - self.num_output_tokens)

    @property
    def num_segments(self) -> int:
        return self.earlier.num_segments + len(self.segments)

    @property
    def think_open(self) -> bool:
        """True while the ``<think>`` block opened by the prompt (chat template) is not closed.

        A ``<think>`` the model writes itself does not count: the fallback that closes the
        block exists for templates that open it.
        """
        prompt = self.prompt_text
        return prompt.rfind(THINK_START) > prompt.rfind(THINK_END) and THINK_END not in self.output_text

    def commit(self, record: SegmentRecord, result: SegmentResult, num_kept: int) -> RelayState:
        """Append the first ``num_kept`` tokens of ``result`` as the segment ``record``."""
        kept_ids = result.token_ids[:num_kept]
        if num_kept == len(result.token_ids):
            kept_text = result.text
        else:
            kept_text = result.text[: result.text_offsets[num_kept - 1]] if num_kept else ""
        prev_tail = self.output_text[-len(THINK_END):]
        phase = self.phase
        if phase is Phase.REASONING and THINK_END in prev_tail + kept_text:
            phase = Phase.ANSWER
        record = replace(record, text=kept_text, num_tokens=num_kept,
                         num_dropped_tokens=record.num_dropped_tokens + len(result.token_ids) - num_kept)
        return replace(
            self,
            output_token_ids=self.output_token_ids + kept_ids
            if self.handoff is HandoffMode.TOKEN_IDS else (),
            output_text=self.output_text + kept_text,
            num_output_tokens=self.num_output_tokens + num_kept,
            segments=self.segments + (record,),
            phase=phase,
        )

    def append_forced(self, token_ids: tuple[int, ...], text: str) -> RelayState:
        """Append text no model wrote (RelayGen's ``</think>`` fallback); counts its tokens."""
        phase = Phase.ANSWER if THINK_END in text else self.phase
        return replace(
            self,
            output_token_ids=self.output_token_ids + token_ids
            if self.handoff is HandoffMode.TOKEN_IDS else (),
            output_text=self.output_text + text,
            num_output_tokens=self.num_output_tokens + max(1, len(token_ids)),
            phase=phase,
        )

    def with_memo(self, **updates) -> RelayState:
        return replace(self, memo=MappingProxyType({**self.memo, **updates}))

    def finish(self, reason: FinishReason) -> RelayState:
        return replace(self, finish_reason=reason)

    def switch_to(self, tier: Tier) -> RelayState:
        return self if tier is self.tier else replace(self, tier=tier)

    def tokens_by_tier(self, include_dropped: bool = False) -> dict[Tier, int]:
        large, small = self.earlier.generated if include_dropped else self.earlier.tokens
        counts = {Tier.LARGE: large, Tier.SMALL: small}
        for seg in self.segments:
            counts[seg.tier] += seg.num_tokens + (seg.num_dropped_tokens if include_dropped else 0)
        return counts

    @property
    def num_switches(self) -> int:
        tiers = [self.earlier.last_tier] * (self.earlier.last_tier is not None) + [s.tier for s in self.segments]
        return self.earlier.num_switches + sum(1 for a, b in zip(tiers, tiers[1:]) if a is not b)

    def totals(self) -> Totals:
        """This state's counts, as a resumed request starts from them."""
        tokens, generated = self.tokens_by_tier(), self.tokens_by_tier(include_dropped=True)
        return Totals(self.num_segments, self.num_switches, (tokens[Tier.LARGE], tokens[Tier.SMALL]),
                      (generated[Tier.LARGE], generated[Tier.SMALL]),
                      self.segments[-1].tier if self.segments else self.earlier.last_tier)
