"""Prefill-ahead: fill the idle tier's prefix cache while the other tier generates.

At a switch the receiving tier must prefill everything the other tier wrote since it last
ran (the *delta*). On the large tier that prefill costs about as much as several decode
steps, and it is the main cost of a handoff. Most of it can be done early: while one tier
generates, the other one is idle, so the controller sends it ``prefill_only`` jobs with the
prefix written so far. vLLM's prefix cache keeps whole KV blocks only, so a job is sent each
time the prefix completes a new block of the idle tier; at the switch only the tail of the
last block is left to compute.

A warm-up job occupies the idle tier for one engine step. If that step is still running when
the switch comes, the receiving tier's real segment waits behind it, and the warm-up costs
more than it saves. :class:`WarmTiming` keeps running estimates of each tier's decode time
per token and of each tier's warm-up time, and a warm-up is sent only when the generating
segment is likely to write enough tokens to hide it: fixed-length segments know their
remainder; segments a rule may end early (entropy, cue strings) are judged by how long the
policy's recent segments on that tier ran (``hide_probability``; the same gate holds back feeds
of a KV-session tier, since a feed still running at the switch delays it).

A tier that keeps the request's KV in a *session* (``feed_tiers``, engines/session/) keeps
partial blocks too. Such a tier is *fed* instead: the generating tier reports every
``feed_interval_tokens`` tokens, and the receiving tier gets every token received so far, with
at most one feed in flight (the next one carries everything that arrived meanwhile, so the
feeds adapt to the receiving tier's speed). A feed is work the switch would need anyway, so
it is not gated by :class:`WarmTiming`. At the switch, only the tokens of the last feed
interval (and a feed still running) are left.

Pure bookkeeping: no I/O. :class:`~relay_ray.controller.relay.RelayController` sends the jobs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from relay_ray.types import KvSession, SegmentJob, StopRule, Tier


@dataclass
class PrefillAheadPlanner:
    """Per request: how far each tier's prefix cache is known to reach, in tokens.

    ``block_sizes`` maps tiers to their KV block size (0: never warmed). ``stream_tiers`` are
    warmed while the other tier generates (it streams its tokens at their block boundaries);
    any tier may be warmed with the prompt.
    """

    block_sizes: dict[Tier, int]
    stream_tiers: frozenset[Tier] = frozenset({Tier.LARGE})
    cached_tokens: dict[Tier, int] = field(default_factory=lambda: {Tier.LARGE: 0, Tier.SMALL: 0})
    feed_tiers: frozenset[Tier] = frozenset()  # tiers keeping the request's KV session: fed, not block-warmed
    feed_interval_tokens: int = 4
    feeding: set[Tier] = field(default_factory=set)  # a feed job is in flight to these tiers

    def ran(self, tier: Tier, num_computed_tokens: int) -> None:
        """``tier`` computed the KV of the first ``num_computed_tokens`` tokens (a segment)."""
        self._advance(tier, num_computed_tokens)

    def stream_block(self, tier: Tier) -> int:
        """Block size at which the tier generating now must report, to warm ``tier`` (0: never)."""
        if tier not in self.stream_tiers:
            return 0
        return self.feed_interval_tokens if tier in self.feed_tiers else self.block_sizes.get(tier, 0)

    def is_fed(self, tier: Tier) -> bool:
        return tier in self.feed_tiers

    def warm_length(self, tier: Tier, prefix_len: int) -> int:
        """Prefix length to prefill on ``tier`` now (a multiple of its block size; for a fed
        tier the whole prefix, if it adds ``feed_interval_tokens`` tokens and no feed is in
        flight), or 0. A fed tier's feed counts as in flight until :meth:`fed`."""
        if tier in self.feed_tiers:
            cached = self.cached_tokens[tier]
            if tier in self.feeding or prefix_len - cached < (self.feed_interval_tokens if cached else 1):
                return 0
            self.cached_tokens[tier] = prefix_len
            self.feeding.add(tier)
            return prefix_len
        block = self.block_sizes.get(tier, 0)
        if block <= 0:
            return 0
        aligned = prefix_len // block * block
        if aligned <= self.cached_tokens[tier]:
            return 0
        self.cached_tokens[tier] = aligned
        return aligned

    def fed(self, tier: Tier) -> None:
        """The feed job to ``tier`` has ended (the next one may go)."""
        self.feeding.discard(tier)

    def _advance(self, tier: Tier, num_tokens: int) -> None:
        if tier in self.feed_tiers:
            self.cached_tokens[tier] = max(self.cached_tokens[tier], num_tokens)
            return
        block = self.block_sizes.get(tier, 0)
        if block > 0:
            self.cached_tokens[tier] = max(self.cached_tokens[tier], num_tokens // block * block)


def prefill_job(request_id: str, segment_index: int, prefix_token_ids: tuple[int, ...],
                kv_session: KvSession = KvSession.NONE) -> SegmentJob:
    """A job that only prefills ``prefix_token_ids`` (one engine step, nothing returned)."""
    return SegmentJob(
        request_id=request_id,
        segment_index=segment_index,
        stop=StopRule(max_new_tokens=1),
        prefix_token_ids=prefix_token_ids,
        prefill_only=True,
        kv_session=kv_session,
    )


@dataclass(frozen=True, slots=True)
class SegmentProgress:
    """Where the generating segment stands when a warm-up of the other tier is considered."""

    policy: str
    tier: Tier  # the generating tier
    num_generated: int  # tokens it has written so far
    budget_left: int  # tokens its budget still allows
    can_stop_early: bool  # its rule (entropy, cue string, ...) may end it before the budget


@dataclass
class WarmTiming:
    """Controller-wide estimates that decide whether a warm-up would end before the switch.

    Running averages (EMA, weight ``alpha`` for a new sample, in ms) of each tier's decode time
    per token and warm-up time, and the recent segment lengths of each (policy, tier): the
    empirical chance that a segment which has written *g* tokens writes *k* more. Segment
    lengths of the real policies are far from memoryless (rstitch's small segments end at the
    answer's digit positions: 9, 20, 29, 50 tokens...), so a mean says little.
    """

    alpha: float = 0.2
    hide_probability: float = 0.5  # 0: trust the budget alone (the segment may run to it)
    history: int = 256  # segment lengths kept per (policy, tier)
    min_samples: int = 8  # fewer segments of (policy, tier) than this: no opinion (warm)
    decode_ms_per_token: dict[Tier, float] = field(default_factory=dict)
    warm_ms: dict[Tier, float] = field(default_factory=dict)
    segment_lengths: dict[tuple[str, Tier], deque[int]] = field(default_factory=dict)

    def observe_segment(self, policy: str, tier: Tier, num_tokens: int) -> None:
        """A segment of ``policy`` on ``tier`` generated ``num_tokens`` (dropped ones included)."""
        key = (policy, tier)
        if key not in self.segment_lengths:
            self.segment_lengths[key] = deque(maxlen=self.history)
        self.segment_lengths[key].append(num_tokens)

    def outlast_probability(self, policy: str, tier: Tier, num_generated: int, more_tokens: int) -> float | None:
        """Of the recent segments of ``policy`` on ``tier`` longer than ``num_generated``, the
        share that wrote at least ``more_tokens`` more; None with fewer than ``min_samples``
        segments recorded. A sparse tail counts as short: fewer than ``min_samples`` segments
        that long make the share's denominator ``min_samples`` (a segment past nearly every
        recorded length is not taken to run on: in a first run, warm-ups sent there on no
        evidence ran into the switch)."""
        lengths = self.segment_lengths.get((policy, tier), ())
        if len(lengths) < self.min_samples:
            return None
        running = [n for n in lengths if n > num_generated]
        return sum(n >= num_generated + more_tokens for n in running) / max(len(running), self.min_samples)

    def observe_decode(self, tier: Tier, num_tokens: int, elapsed_ms: float) -> None:
        """``tier`` wrote ``num_tokens`` tokens in ``elapsed_ms`` (between two deltas of a
        segment, so no prefill is counted: a time per token that is too high would make a
        warm-up look shorter in tokens than it is)."""
        if num_tokens > 0:
            self._update(self.decode_ms_per_token, tier, elapsed_ms / num_tokens)

    def observe_warm(self, tier: Tier, elapsed_ms: float) -> None:
        self._update(self.warm_ms, tier, elapsed_ms)

    def hidden(self, warm_tier: Tier, progress: SegmentProgress) -> bool:
        """Would a warm-up of ``warm_tier`` end before the generating segment does? No if its
        budget ends sooner; if its rule may stop it early, only if at least ``hide_probability``
        of the comparable recent segments ran long enough. True until the timings exist."""
        warm = self.warm_ms.get(warm_tier)
        rate = self.decode_ms_per_token.get(progress.tier)
        if warm is None or rate is None:
            return True
        tokens_during_warm = warm / rate
        if progress.budget_left < tokens_during_warm:
            return False
        if not progress.can_stop_early or self.hide_probability <= 0:
            return True
        chance = self.outlast_probability(progress.policy, progress.tier, progress.num_generated,
                                          math.ceil(tokens_during_warm))
        return chance is None or chance >= self.hide_probability

    def _update(self, table: dict, tier, sample: float) -> None:
        old = table.get(tier)
        table[tier] = sample if old is None else old + self.alpha * (sample - old)
