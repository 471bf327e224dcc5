"""Evaluate a :class:`~relay_ray.types.StopRule` on a segment's token stream.

Pure logic (no engine import): the tier feeds every new token to :class:`SegmentStopper`
and aborts generation when it reports a stop. Matching semantics are in ``StopRule``'s
docstring; ``docs/policies.md`` (Stop rules) has the worked cases.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay_ray.types import Commit, FinishReason, StopRule


@dataclass(frozen=True, slots=True)
class StopDecision:
    """The segment ends; keep the first ``num_kept_tokens`` tokens."""

    finish_reason: FinishReason
    num_kept_tokens: int
    matched_stop: str = ""


class SegmentStopper:
    """Accumulates tokens of one segment and decides when it ends.

    ``context_text`` is the end of the prefix the segment continues; it is used only to
    decide whether a stop string starts at a word boundary. An end-of-sequence token ends
    the segment (kept) whatever the rule says, even before ``min_new_tokens``.
    """

    def __init__(self, rule: StopRule, context_text: str = "", eos_token_ids: tuple[int, ...] = ()) -> None:
        self.rule = rule
        self._eos = frozenset(eos_token_ids)
        self._context_char = context_text[-1:] if context_text else ""
        self.token_ids: list[int] = []
        self.text = ""
        self.text_offsets: list[int] = []  # end of each token's text in self.text
        self._max_stop_len = max((len(s) for s in rule.stop_strings), default=0)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def kept_text(self, num_kept_tokens: int) -> str:
        return self.text[: self.text_offsets[num_kept_tokens - 1]] if num_kept_tokens else ""

    def push(self, token_id: int, text_piece: str, entropy: float | None = None) -> StopDecision | None:
        """Add one token (and the text it decoded to); return a decision if the segment ends."""
        start_of_new = len(self.text)
        self.token_ids.append(token_id)
        self.text += text_piece
        self.text_offsets.append(len(self.text))
        n = len(self.token_ids)
        rule = self.rule
        if token_id in self._eos:
            return StopDecision(FinishReason.EOS, n)
        if n >= rule.min_new_tokens:
            if token_id in rule.stop_token_ids:
                return StopDecision(FinishReason.STOP_TOKEN, n)
            if rule.stop_strings and text_piece:
                decision = self._match_strings(start_of_new)
                if decision is not None:
                    return decision
            if rule.entropy is not None and entropy is not None and self._entropy_fires(entropy):
                kept = n if rule.entropy.commit is Commit.INCLUSIVE else n - 1
                return StopDecision(FinishReason.ENTROPY, kept)
        if n >= rule.max_new_tokens:
            return StopDecision(FinishReason.LENGTH, n)
        return None

    def _entropy_fires(self, entropy: float) -> bool:
        er = self.rule.entropy
        return entropy > er.threshold if er.above else entropy < er.threshold

    def _match_strings(self, start_of_new: int) -> StopDecision | None:
        # Only matches that end inside the newest token's text are new; earlier ones were
        # either checked already or lay before min_new_tokens.
        window_start = max(0, start_of_new - self._max_stop_len + 1)
        best: tuple[int, int, str] | None = None  # (match_end, match_start, string)
        for stop in self.rule.stop_strings:
            pos = self.text.find(stop, window_start)
            while pos != -1:
                end = pos + len(stop)
                if end > start_of_new and self._starts_word(pos, stop):
                    if best is None or end < best[0]:
                        best = (end, pos, stop)
                    break
                pos = self.text.find(stop, pos + 1)
        if best is None:
            return None
        end, pos, stop = best
        if self.rule.string_commit is Commit.INCLUSIVE:
            kept = len(self.token_ids)
        else:
            kept = sum(1 for off in self.text_offsets if off <= pos)
        return StopDecision(FinishReason.STOP_STRING, kept, stop)

    def _starts_word(self, pos: int, stop: str) -> bool:
        if not self.rule.word_start or not stop[:1].isalnum():
            return True
        before = self.text[pos - 1] if pos > 0 else self._context_char
        return not before.isalnum()
