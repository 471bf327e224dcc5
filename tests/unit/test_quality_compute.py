"""Compute accounting, ideal time and speculative-decoding positions (relay_ray/quality/compute.py)."""

from __future__ import annotations

import pytest

from relay_ray.quality.compute import (
    TierCost, compute_share, efficiency, handoffs_into_large, ideal_ms, large_computed_tokens,
    segments_into_large, single_tier_costs, speculative_large_positions, time_share,
)
from relay_ray.quality.runner import ItemResult, SegmentStat

PROMPT = 100


def _item(id_: str, segments, client_ms: float = 0.0, error: str = "") -> ItemResult:
    large = sum(s.num_tokens for s in segments if s.large)
    small = sum(s.num_tokens for s in segments if not s.large)
    return ItemResult(id=id_, correct=True, predicted="1", gold="1", large_tokens=large, small_tokens=small,
                      num_switches=max(0, len(segments) - 1), client_ms=client_ms, error=error,
                      segments=tuple(segments))


def _large_only(id_: str, n: int = 200, error: str = "") -> ItemResult:
    return _item(id_, [SegmentStat(large=True, num_tokens=n, num_prompt_tokens=PROMPT)], error=error)


def test_a_segment_computes_its_uncached_prefix_and_all_but_its_last_token():
    seg = SegmentStat(large=True, num_tokens=10, num_dropped=1, num_prompt_tokens=140, num_cached_tokens=128)
    assert seg.computed_tokens == 12 + 10
    assert SegmentStat(large=True, num_tokens=0, num_prompt_tokens=5, num_cached_tokens=5).computed_tokens == 0


def test_relay_pays_the_large_prefill_of_every_small_stretch():
    """rstitch-like: small writes 50, large 1 (+1 dropped uncertain small token), ... The large
    tier prefills each small stretch (less what its cache holds) on top of its own tokens."""
    segs = [SegmentStat(large=False, num_tokens=50, num_dropped=1, num_prompt_tokens=PROMPT),
            SegmentStat(large=True, num_tokens=1, num_dropped=1, num_prompt_tokens=PROMPT + 50),
            SegmentStat(large=False, num_tokens=60, num_dropped=1, num_prompt_tokens=PROMPT + 51,
                        num_cached_tokens=PROMPT + 32),
            SegmentStat(large=True, num_tokens=2, num_dropped=1, num_prompt_tokens=PROMPT + 111,
                        num_cached_tokens=128)]
    relay = _item("a", segs)
    # large: (150 - 0) + (2 - 1) and (211 - 128) + (3 - 1)
    assert large_computed_tokens(relay) == 151 + 85
    base = _large_only("a", n=211)
    assert large_computed_tokens(base) == PROMPT + 210
    share = compute_share([relay], [base])
    assert share == pytest.approx(236 / 310)
    # the token share says ~1.3%; the compute share is what the large tier really did
    assert relay.large_tokens / (relay.large_tokens + relay.small_tokens) < 0.03 < share


def test_compute_share_pools_items_and_skips_errors_and_unmatched_ids():
    base = [_large_only("a", 100), _large_only("b", 300), _large_only("c", 50)]
    run = [_large_only("a", 50), _large_only("b", 150), _large_only("c", 10, error="x"),
           _large_only("z", 999)]
    assert compute_share(run, base) == pytest.approx((149 + 249) / (199 + 399))
    assert compute_share([], base) is None


@pytest.mark.parametrize("matches,k,positions", [
    ([True] * 9, 4, 2 * 5),  # tokens 1-4 accepted + bonus (5 tokens), then 6-8 (3 accepted, end)
    ([False] * 9, 4, 8 * 5),  # nothing accepted: one token per 5-position step
    ([True, True, False, True, True, True, True, True, True], 2, 3 * 3),
    ([True], 4, 0),  # the prefill writes the only token
])
def test_speculative_positions_count_every_verified_draft(matches, k, positions):
    assert speculative_large_positions(matches, k) == positions


def test_speculative_decoding_costs_more_large_compute_than_decoding_alone():
    matches = [i % 5 != 0 for i in range(200)]  # 80% of draft tokens right
    assert speculative_large_positions(matches, 4) > 199
    with pytest.raises(ValueError):
        speculative_large_positions(matches, 0)


def test_tier_cost_is_the_fastest_request_and_the_ideal_a_lower_bound():
    runs = [_item(str(i), [SegmentStat(large=True, num_tokens=101, decode_ms=100 * step)], client_ms=fixed + 100 * step)
            for i, (step, fixed) in enumerate([(20.0, 50.0), (22.0, 40.0), (25.0, 70.0)])]
    cost = TierCost.of(runs)
    assert cost.ms_per_token == 20.0
    assert cost.fixed_ms == pytest.approx(40.0)  # each request less its own decode time
    one_token, failed = _item("1t", [SegmentStat(large=True, num_tokens=1)]), _large_only("e", error="boom")
    per_request = single_tier_costs([*runs, one_token, failed])
    assert [c.ms_per_token for c in per_request] == [20.0, 22.0, 25.0]
    assert [c.fixed_ms for c in per_request] == pytest.approx([50.0, 40.0, 70.0])
    small = TierCost(1.0, 10.0)
    for r in runs:
        assert ideal_ms(r, cost, small) <= r.client_ms + 1e-9
    with pytest.raises(ValueError, match="single-segment"):
        TierCost.of([_item("x", [SegmentStat(large=True, num_tokens=1)])])


def test_ideal_starts_with_the_first_tier_and_efficiency_sums_over_requests():
    large, small = TierCost(20.0, 100.0), TierCost(1.0, 10.0)
    segs = [SegmentStat(large=False, num_tokens=50), SegmentStat(large=True, num_tokens=2, handoff_ms=3.0,
                                                                     queue_ms=1.0, prefill_ms=36.0),
            SegmentStat(large=False, num_tokens=48)]
    relay = _item("a", segs, client_ms=200.0)
    assert ideal_ms(relay, large, small) == pytest.approx(10 + 97 * 1.0 + 2 * 20.0)
    assert efficiency([relay, relay], large, small) == pytest.approx(147.0 / 200.0)
    assert segments_into_large([relay, _large_only("b")]) == [segs[1]]  # a request's first is no switch
    hand = handoffs_into_large([relay], large)
    assert hand.into_large_per_request == 1 and hand.into_large_p50_ms == 40.0
    assert hand.into_large_p50_steps == pytest.approx(2.0)


def test_the_first_large_segment_counts_its_whole_prefix():
    """Another request's chat-template block in the cache is not this request's saving: the
    figure must not depend on what ran before (large-only at c=16 starts 16 requests cold)."""
    warm = _item("a", [SegmentStat(large=True, num_tokens=10, num_prompt_tokens=39, num_cached_tokens=32)])
    cold = _item("a", [SegmentStat(large=True, num_tokens=10, num_prompt_tokens=39)])
    assert large_computed_tokens(warm) == large_computed_tokens(cold) == 39 + 9
    later = _item("b", [SegmentStat(large=True, num_tokens=10, num_prompt_tokens=39, num_cached_tokens=32),
                        SegmentStat(large=False, num_tokens=40, num_prompt_tokens=49, num_cached_tokens=32),
                        SegmentStat(large=True, num_tokens=2, num_prompt_tokens=89, num_cached_tokens=32)])
    assert large_computed_tokens(later) == 48 + (89 - 32) + 1  # the later segment keeps its own cache hits


def test_time_share_is_the_large_tier_busy_time():
    base = [_item("a", [SegmentStat(large=True, num_tokens=100, prefill_ms=10.0, decode_ms=990.0)])]
    relay = [_item("a", [SegmentStat(large=False, num_tokens=90, decode_ms=90.0),
                         SegmentStat(large=True, num_tokens=10, prefill_ms=20.0, decode_ms=90.0)])]
    assert time_share(relay, base) == pytest.approx(110.0 / 1000.0)
    assert time_share([], base) is None


def test_splitting_an_answer_into_large_segments_costs_speculative_decoding_forward_passes():
    from relay_ray.quality.spec_steps import large_forward_passes

    matches = [True] * 20  # a draft that is always right
    # one segment: the prefill's token, then 19 tokens in 4 steps of k + 1 = 5 (the last one short)
    assert large_forward_passes(matches, [(True, 20)], k=4) == (20, 5, matches)
    # four large segments of 4 tokens with small ones between: 16 large tokens, 8 passes
    split = [(True, 4), (False, 1)] * 4
    assert large_forward_passes(matches, split, k=4)[:2] == (16, 8)
    # only the large segments' matches are returned
    mixed = [True, False, True, True, False]
    assert large_forward_passes(mixed, [(True, 2), (False, 2), (True, 1)], k=4)[2] == [True, False, False]
    with pytest.raises(ValueError, match="cover 3 tokens"):
        large_forward_passes(mixed, [(True, 3)], k=4)
