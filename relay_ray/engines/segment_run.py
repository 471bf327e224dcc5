"""One segment job's token stream, engine-free: decode, stop rule, signals, deltas, result.

A tier feeds :class:`SegmentRun` the tokens its engine produces (with their top-k logprobs)
and asks it, after each engine step, for the delta it owes the controller; when
:meth:`SegmentRun.push` reports the end, the tier aborts the engine request and takes the
:meth:`SegmentRun.result`. Nothing here imports an engine, so every rule is unit-tested
against scripted token streams (``tests/unit/test_segment_run.py``), and the scripted test
tier runs the same code as the vLLM tier.

Contracts:
- Deltas never carry a token that the stop rule could still drop: with an exclusive stop
  string, a token overlapping a possible match is held back; with ``retract_string`` (a
  policy may drop everything from an occurrence of it, e.g. RelayLLM's ``<call>``), tokens
  from its first occurrence (or a partial occurrence at the end) are held back. So the
  tokens and text streamed are always a prefix of the result's.
- ``job.resume_token_ids`` are tokens this segment produced before a failure (segment
  migration): they follow the prefix, count as the segment's first tokens for every rule
  (min/max tokens, stop strings), appear in the result, and are never streamed again.
  Their signals are unknown and reported as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from relay_ray.engines.signals import normalized_entropy, top_margin
from relay_ray.engines.stopping import SegmentStopper, StopDecision
from relay_ray.types import (
    Commit, FinishReason, SegmentDelta, SegmentJob, SegmentResult, SegmentTiming, TokenSignals,
)


class Decoder(Protocol):
    """Incremental detokenizer (``engines.detok.IncrementalDecoder``)."""

    def push(self, token_id: int) -> str: ...

    def context_text(self) -> str: ...


@dataclass(frozen=True, slots=True)
class TokenOutput:
    """One generated token and its signals (None where the engine gave no logprobs)."""

    token_id: int
    logprob: float | None = None  # log-probability of the sampled token
    entropy: float | None = None  # normalized entropy H / log V (engines.signals)
    margin: float | None = None  # p(top1) - p(top2)

    @classmethod
    def from_top_logprobs(cls, token_id: int, logprob: float | None, top_logprobs: Sequence[float],
                          vocab_size: int, want_entropy: bool, want_margin: bool) -> TokenOutput:
        """Signals computed from the token's top-k log-probabilities (as engines return them)."""
        if not top_logprobs:
            return cls(token_id, logprob)
        return cls(token_id, logprob,
                   normalized_entropy(top_logprobs, vocab_size) if want_entropy else None,
                   top_margin(top_logprobs) if want_margin else None)


class SegmentRun:
    """The state of one running segment job.

    ``prefix_ids`` is the tokenized prefix (without ``job.resume_token_ids``);
    ``max_model_len`` bounds prefix plus new tokens.
    """

    def __init__(self, job: SegmentJob, prefix_ids: Sequence[int], decoder: Decoder, *, max_model_len: int,
                 eos_token_ids: Sequence[int] = ()) -> None:
        self.job = job
        self.prefix_ids = list(prefix_ids)
        self._decoder = decoder
        eos = () if job.sampling.ignore_eos else tuple(eos_token_ids)
        self.stopper = SegmentStopper(job.stop, decoder.context_text() if job.stop.word_start else "", eos)
        self._logprobs: list[float] = []
        self._entropies: list[float] = []
        self._margins: list[float] = []
        self.decision: StopDecision | None = None
        self.engine_finish: FinishReason | None = None  # the engine ended the request itself
        self.num_resumed = len(job.resume_token_ids)
        self.num_streamed = self.num_resumed  # resumed tokens were streamed before the failure
        for token_id in job.resume_token_ids:
            if self.push(TokenOutput(token_id)):
                break
        room = max_model_len - len(self.prefix_ids) - self.num_resumed
        self.max_engine_tokens = max(0, min(job.stop.max_new_tokens - self.num_resumed, room))
        if job.prefill_only:
            self.max_engine_tokens = min(self.max_engine_tokens, 1)
        if self.max_engine_tokens == 0 and not self.done:
            self.decision = StopDecision(FinishReason.LENGTH, self.stopper.num_tokens)

    @property
    def engine_prefix_ids(self) -> list[int]:
        """What the engine continues: the prefix and the resumed tokens."""
        return self.prefix_ids + list(self.job.resume_token_ids)

    @property
    def done(self) -> bool:
        return self.decision is not None or self.engine_finish is not None

    @property
    def wants_entropy(self) -> bool:
        return self.job.signals.entropy or self.job.stop.entropy is not None

    def push(self, out: TokenOutput) -> bool:
        """Add one token; True when the segment has ended (abort the engine request)."""
        piece = self._decoder.push(out.token_id)
        sig = self.job.signals
        if sig.logprob:
            self._logprobs.append(_or_nan(out.logprob))
        if self.wants_entropy:
            self._entropies.append(_or_nan(out.entropy))
        if sig.margin:
            self._margins.append(_or_nan(out.margin))
        self.decision = self.stopper.push(out.token_id, piece, out.entropy)
        return self.decision is not None

    def engine_finished(self, eos: bool) -> None:
        """The engine ended the request on its own (its EOS or its token limit)."""
        if self.decision is None:
            self.engine_finish = FinishReason.EOS if eos else FinishReason.LENGTH

    # -- streaming ----------------------------------------------------------------------

    def stable_tokens(self) -> int:
        """How many tokens no later token can take back (they may be streamed)."""
        stopper, rule = self.stopper, self.job.stop
        text = stopper.text
        limit = len(text)
        if rule.stop_strings and rule.string_commit is Commit.EXCLUSIVE:
            longest = max(len(s) for s in rule.stop_strings)
            limit = min(limit, len(text) - (longest - 1))
        if rule.retract_string:
            limit = min(limit, _open_occurrence(text, rule.retract_string))
        return sum(1 for end in stopper.text_offsets if end <= limit)

    def take_delta(self) -> SegmentDelta | None:
        """The delta owed now: every ``stream_interval_tokens`` stable tokens, and whenever
        prefix plus stable tokens complete a ``stream_block_tokens`` block."""
        if self.done:
            return None
        stable = self.stable_tokens()
        if not delta_due(self.job, len(self.prefix_ids), self.num_streamed, stable):
            return None
        stopper = self.stopper
        delta = SegmentDelta(tuple(stopper.token_ids[self.num_streamed:stable]),
                             stopper.text[len(stopper.kept_text(self.num_streamed)):len(stopper.kept_text(stable))])
        self.num_streamed = stable
        return delta

    # -- the end --------------------------------------------------------------------------

    def result(self, *, replica_id: str = "", num_cached_tokens: int = 0,
               timing: SegmentTiming = SegmentTiming()) -> SegmentResult:
        """The segment's result once it is done (or the engine stream ended)."""
        stopper, decision = self.stopper, self.decision
        n_generated = stopper.num_tokens
        n_kept = decision.num_kept_tokens if decision else n_generated
        num_dropped = n_generated - n_kept
        if self.job.prefill_only:  # the sampled token is not part of any answer
            n_kept = num_dropped = 0
        if decision is not None:
            finish, matched = decision.finish_reason, decision.matched_stop
        else:
            finish, matched = self.engine_finish or FinishReason.LENGTH, ""
        keep = slice(0, n_kept)
        return SegmentResult(
            token_ids=tuple(stopper.token_ids[keep]),
            text=stopper.kept_text(n_kept),
            finish_reason=finish,
            text_offsets=tuple(stopper.text_offsets[keep]),
            matched_stop=matched,
            num_dropped_tokens=num_dropped,
            num_prompt_tokens=len(self.prefix_ids) + self.num_resumed,  # what the engine was given
            num_cached_tokens=num_cached_tokens,
            signals=TokenSignals(tuple(self._logprobs[keep]), tuple(self._entropies[keep]),
                                 tuple(self._margins[keep])),
            timing=timing,
            replica_id=replica_id,
        )


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def delta_due(job: SegmentJob, prefix_len: int, emitted: int, stable: int) -> bool:
    """Whether a delta is owed once ``stable`` tokens may be streamed, ``emitted`` having been:
    every ``stream_interval_tokens`` tokens, and whenever the prefix plus the tokens reach a
    multiple of ``stream_block_tokens`` (prefill-ahead warms the other tier at those moments)."""
    if stable <= emitted:
        return False
    interval, block = job.stream_interval_tokens, job.stream_block_tokens
    if interval and stable - emitted >= interval:
        return True
    return bool(block) and (prefix_len + stable) // block > (prefix_len + emitted) // block


def _open_occurrence(text: str, marker: str) -> int:
    """Where ``text`` may start to be taken back: the first occurrence of ``marker``, else a
    proper prefix of ``marker`` at the end of ``text``, else ``len(text)``."""
    pos = text.find(marker)
    if pos != -1:
        return pos
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:length]):
            return len(text) - length
    return len(text)
