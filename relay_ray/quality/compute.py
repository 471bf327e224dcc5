"""What a run cost, from the segments its responses report (pure; no I/O).

**Large compute.** A relay saves the large model's *compute*, not just its tokens: the large
tier also prefills every token the small tier wrote since its last segment (less what its
prefix cache still holds, in whole KV blocks). Per segment the tier ran ``(prompt - cached) +
(generated - 1)`` token positions through its model (:attr:`SegmentStat.computed_tokens`; the
first large segment of a request counts its whole prefix, :func:`large_computed_tokens`); the
**large compute share** of a run is the sum over its items of those positions on the large
tier, over the same sum for large-only on the same items. A prefill position and a decode
position count the same (each is one token through every layer: ~2 x parameters FLOPs;
attention over the context is extra for both). On memory-bound hardware a decode position
costs far more *time* than a prefill position (prefill is batched): the **large time share**
(:func:`time_share`) is the large tier's measured busy time (delta prefills + decoding) over
large-only's. Prefill-ahead warm-ups (``prefill_ahead``) are not reported in responses:
with prefill-ahead on the figure undercounts; the served configs of the matrix keep it off.

**Speculative decoding.** Its large tier verifies ``k`` drafted tokens per step, ``k + 1``
positions, whether or not they are accepted; responses do not report steps, so
:func:`speculative_large_positions` counts them from the large model's greedy trace and
where the draft model's greedy token matches it (greedy verification accepts exactly the
matching prefix of the draft, then adds the target's own token).

**Ideal time.** :class:`TierCost` is a tier's fastest per-token decode time and lowest fixed
per-request cost over the requests of its single-tier run at concurrency 1; the ideal time of
a relay request is the fixed cost of its first tier plus each committed token at its tier's
per-token time: a relay whose switches cost nothing (dropped tokens and every delta prefill
count as switch cost). At concurrency 1 no relay request can beat it (up to the noise of the
fastest single-tier request): it must pay one fixed cost and one decode step per token on
the same engines and cores. Efficiency = sum of ideal / sum of measured client latencies.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from relay_ray.quality.runner import ItemResult, SegmentStat


def large_computed_tokens(result: ItemResult) -> int:
    """Token positions the large tier computed for ``result``, as if the request ran alone: its
    first large segment prefills its whole prefix (hits in the prefix cache there can only come
    from *other* requests sharing the chat template's first block, which depend on what ran
    before: not this request's cost); later ones prefill what the tier's cache no longer holds."""
    total, first = 0, True
    for s in result.segments:
        if s.large:
            total += s.computed_tokens + (s.num_cached_tokens if first else 0)
            first = False
    return total


def large_busy_ms(result: ItemResult) -> float:
    """Time the large tier spent on ``result`` (its delta prefills and decoding)."""
    return sum(s.prefill_ms + s.decode_ms for s in result.segments if s.large)


def time_share(results: Sequence[ItemResult], reference: Sequence[ItemResult]) -> float | None:
    """Large-tier busy time of ``results`` over ``reference``'s, on the items both answered."""
    ok = {r.id: r for r in reference if not r.error}
    pairs = [(r, ok[r.id]) for r in results if not r.error and r.id in ok]
    ref = sum(large_busy_ms(b) for _, b in pairs)
    return sum(large_busy_ms(a) for a, _ in pairs) / ref if ref else None


def compute_share(results: Sequence[ItemResult], reference: Sequence[ItemResult]) -> float | None:
    """Large-tier positions computed by ``results`` over ``reference``'s, on the items both
    answered without error (None if there are none or the reference computed nothing)."""
    ok = {r.id: r for r in reference if not r.error}
    pairs = [(r, ok[r.id]) for r in results if not r.error and r.id in ok]
    ref = sum(large_computed_tokens(b) for _, b in pairs)
    return sum(large_computed_tokens(a) for a, _ in pairs) / ref if ref else None


def speculative_large_positions(matches: Sequence[bool], k: int) -> int:
    """Large-tier decode positions of greedy speculative decoding with ``k`` drafted tokens
    per step, over a completion whose token ``j`` the draft predicts right iff ``matches[j]``.

    The prompt's prefill writes token 0; each step verifies ``k`` drafts (``k + 1``
    positions) and keeps the matching prefix plus the target's token at the first mismatch.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    n, pos, steps = len(matches), 1, 0
    while pos < n:
        accepted = 0
        while accepted < k and pos + accepted < n and matches[pos + accepted]:
            accepted += 1
        pos += accepted + 1
        steps += 1
    return steps * (k + 1)


@dataclass(frozen=True)
class TierCost:
    """A tier alone: fastest per-token decode time, lowest fixed per-request cost (ms)."""

    ms_per_token: float
    fixed_ms: float

    @classmethod
    def of(cls, results: Sequence[ItemResult]) -> TierCost:
        """From a single-tier run (one segment per request) at concurrency 1."""
        per_request = single_tier_costs(results)
        if not per_request:
            raise ValueError("no single-segment request with more than one token to measure a tier on")
        return cls(min(c.ms_per_token for c in per_request), min(c.fixed_ms for c in per_request))


def single_tier_costs(results: Sequence[ItemResult]) -> list[TierCost]:
    """Each single-segment request's own decode step and fixed cost (requests without an error
    and with more than one token; others are skipped)."""
    costs = []
    for r in results:
        if r.error or len(r.segments) != 1 or r.segments[0].num_tokens < 2:
            continue
        seg = r.segments[0]
        step = seg.decode_ms / (seg.num_tokens - 1)
        costs.append(TierCost(step, r.client_ms - (seg.num_tokens - 1) * step))
    return costs


def ideal_ms(result: ItemResult, large: TierCost, small: TierCost) -> float:
    """The request's time with free switches (see the module docstring)."""
    first_large = result.segments[0].large if result.segments else True
    first, other = (large, small) if first_large else (small, large)
    n_first, n_other = ((result.large_tokens, result.small_tokens) if first_large
                        else (result.small_tokens, result.large_tokens))
    return first.fixed_ms + max(0, n_first - 1) * first.ms_per_token + n_other * other.ms_per_token


def efficiency(results: Sequence[ItemResult], large: TierCost, small: TierCost) -> float | None:
    ok = [r for r in results if not r.error and r.segments]
    measured = sum(r.client_ms for r in ok)
    return sum(ideal_ms(r, large, small) for r in ok) / measured if measured else None


@dataclass(frozen=True)
class Handoffs:
    """Switches into the large tier: count per request and p50 cost, in ms and in large decode steps."""

    into_large_per_request: float
    into_large_p50_ms: float | None
    into_large_p50_steps: float | None
    into_large_uncached_p50: float | None = None  # tokens the large tier computed before its first new one
    into_large_engine_step_p50_ms: float | None = None  # of the cost, the engine core's step (if reported)


def segments_into_large(results: Sequence[ItemResult]) -> list[SegmentStat]:
    """The large segments that a switch started (every large segment but a request's first)."""
    return [s for r in results for i, s in enumerate(r.segments) if i > 0 and s.large]


def handoffs_into_large(results: Sequence[ItemResult], large: TierCost | None) -> Handoffs:
    """A switch's cost is what the receiving tier and the path to it add before its first new
    token: controller + transport + queueing + the tier's delta prefill with that first token."""
    into = segments_into_large(results)
    costs = [s.handoff_ms + s.queue_ms + s.prefill_ms for s in into]
    p50 = statistics.median(costs) if costs else None
    steps = p50 / large.ms_per_token if p50 is not None and large is not None else None
    uncached = statistics.median(max(0, s.num_prompt_tokens - s.num_cached_tokens) for s in into) if into else None
    engine = [s.engine_step_ms for s in into if s.engine_step_ms > 0]
    return Handoffs(len(costs) / len(results) if results else 0.0, p50, steps, uncached,
                    statistics.median(engine) if engine else None)
