"""Prefill-ahead: the idle tier gets whole-block prefill jobs while the other tier generates."""

from __future__ import annotations

import asyncio

from relay_ray.controller import RelayController, RelayResult
from relay_ray.controller.prefill_ahead import PrefillAheadPlanner
from relay_ray.controller.validate import ControllerLimits
from relay_ray.engines.segment_run import delta_due
from relay_ray.types import PromptInput, RelayRequest, SegmentJob, StopRule, Tier
from tests.unit.fakes import ScriptedTier

VOCAB = ["</s>", "Q: ", "a", " b", " c", " d"]
DOC = [2, 3, 4, 5] * 40  # 160 tokens, no EOS


def _relay(block_size: int, prefill_ahead: bool = True, large_tokens: int = 8, small_tokens: int = 24,
           max_new_tokens: int = 128, tiers=frozenset({Tier.LARGE})):
    large = ScriptedTier(Tier.LARGE, VOCAB, DOC, block_size=block_size)
    small = ScriptedTier(Tier.SMALL, VOCAB, DOC, block_size=block_size)
    controller = RelayController({Tier.LARGE: large, Tier.SMALL: small},
                                 ControllerLimits(prefill_ahead=prefill_ahead, prefill_ahead_tiers=tiers))
    request = RelayRequest(PromptInput(text="Q: "), "fixed-ratio",
                           {"large_tokens": large_tokens, "small_tokens": small_tokens},
                           max_new_tokens=max_new_tokens)

    async def go() -> RelayResult:
        result = None
        async for event in controller.generate(request):
            result = event
        await asyncio.gather(*controller._background)  # let warm jobs land before inspecting
        return result

    return asyncio.run(go()), large, small


def test_deltas_are_due_on_intervals_and_block_boundaries():
    job = SegmentJob("r", 0, StopRule(64), stream_interval_tokens=0, stream_block_tokens=32)
    assert not delta_due(job, 20, 0, 11) and delta_due(job, 20, 0, 12)  # 20 + 12 = one block
    assert not delta_due(job, 20, 12, 13) and delta_due(job, 20, 12, 44)
    job = SegmentJob("r", 0, StopRule(64), stream_interval_tokens=8)
    assert not delta_due(job, 20, 0, 7) and delta_due(job, 20, 0, 8) and not delta_due(job, 20, 8, 8)


def test_planner_sends_each_new_whole_block_once():
    planner = PrefillAheadPlanner({Tier.LARGE: 32, Tier.SMALL: 0})
    assert planner.warm_length(Tier.LARGE, 31) == 0
    assert planner.warm_length(Tier.LARGE, 40) == 32
    assert planner.warm_length(Tier.LARGE, 50) == 0  # block 1 already sent
    assert planner.warm_length(Tier.LARGE, 64) == 64
    planner.ran(Tier.LARGE, 130)  # a segment computed up to token 130: 4 whole blocks
    assert planner.warm_length(Tier.LARGE, 140) == 0
    assert planner.warm_length(Tier.LARGE, 160) == 160
    assert planner.warm_length(Tier.SMALL, 1000) == 0  # block size 0: never warmed


def test_idle_large_tier_is_prefilled_with_whole_blocks_of_the_small_tiers_tokens():
    result, large, small = _relay(block_size=16)
    assert list(result.token_ids) == DOC[:128]  # warming changes nothing in the answer
    warm = [j for j in large.jobs if j.prefill_only]
    real = [j for j in large.jobs if not j.prefill_only]
    assert warm, "the large tier got no prefill-ahead job"
    prompt_len = 1
    for job in warm:
        n = len(job.prefix_token_ids)
        assert n % 16 == 0 and n > 0
        assert list(job.prefix_token_ids[prompt_len:]) == DOC[:n - prompt_len]  # a true prefix of the answer
    lengths = [len(j.prefix_token_ids) for j in warm]
    assert lengths == sorted(set(lengths))  # each block sent once, in order
    # Sent while the small tier generated: tagged with the index of a small segment.
    small_segments = {s.index for s in result.segments if s.tier is Tier.SMALL}
    assert {j.segment_index for j in warm} <= small_segments
    assert len(real) == 4
    assert not any(j.prefill_only for j in small.jobs)  # only the large tier by default
    # With long large segments the small tier is the idle one worth warming, if asked.
    _, _, small = _relay(block_size=16, large_tokens=24, small_tokens=8,
                         tiers=frozenset({Tier.LARGE, Tier.SMALL}))
    assert any(j.prefill_only for j in small.jobs)
    # Deltas come exactly when a block of the idle tier completes: no warm job is late.
    for job in large.jobs:
        if job.prefill_only:
            assert len(job.prefix_token_ids) % 16 == 0


def test_no_prefill_ahead_when_turned_off_or_block_size_unknown():
    for block_size, enabled in ((16, False), (0, True)):
        result, large, small = _relay(block_size=block_size, prefill_ahead=enabled)
        assert list(result.token_ids) == DOC[:128]
        assert not any(j.prefill_only for j in large.jobs + small.jobs)
        assert all(j.stream_interval_tokens == 0 for j in large.jobs + small.jobs)


def test_record_splits_handoff_into_controller_and_transport_time():
    result, _, _ = _relay(block_size=16)
    for seg in result.segments:
        assert seg.controller_ms >= 0 and seg.transport_ms >= 0
        assert abs(seg.handoff_ms - (seg.controller_ms + seg.transport_ms)) < 1e-9


def test_single_tier_policies_never_warm_the_other_tier():
    large = ScriptedTier(Tier.LARGE, VOCAB, DOC, block_size=16)
    small = ScriptedTier(Tier.SMALL, VOCAB, DOC, block_size=16)
    controller = RelayController({Tier.LARGE: large, Tier.SMALL: small}, ControllerLimits(prefill_ahead=True))

    async def go(policy: str) -> None:
        async for _ in controller.generate(RelayRequest(PromptInput(text="Q: "), policy, max_new_tokens=64)):
            pass

    for policy in ("small-only", "large-only"):
        asyncio.run(go(policy))
    assert not any(j.prefill_only or j.stream_interval_tokens for j in large.jobs + small.jobs)


def test_the_prompt_is_prefilled_on_the_idle_small_tier_once():
    prompt = "Q: " + "a b" * 20  # 41 tokens: two whole 16-token blocks
    large = ScriptedTier(Tier.LARGE, VOCAB, DOC, block_size=16, prompt=prompt)
    small = ScriptedTier(Tier.SMALL, VOCAB, DOC, block_size=16, prompt=prompt)
    controller = RelayController({Tier.LARGE: large, Tier.SMALL: small}, ControllerLimits(prefill_ahead=True))
    request = RelayRequest(PromptInput(text=prompt), "fixed-ratio", {"large_tokens": 8, "small_tokens": 24},
                           max_new_tokens=96)

    async def go() -> None:
        async for _ in controller.generate(request):
            pass
        await asyncio.gather(*controller._background)

    asyncio.run(go())
    warm_small = [j for j in small.jobs if j.prefill_only]
    assert [len(j.prefix_token_ids) for j in warm_small] == [32]
    assert warm_small[0].segment_index == 0


def test_warm_timing_hides_a_warm_up_only_behind_enough_remaining_tokens():
    from relay_ray.controller.prefill_ahead import WarmTiming

    timing = WarmTiming(alpha=0.5)
    assert timing.hidden(Tier.LARGE, Tier.SMALL, 0)  # no estimates yet: warm
    timing.observe_decode(Tier.SMALL, 24, 72.0)  # 3 ms per small token
    timing.observe_warm(Tier.LARGE, 80.0)
    assert not timing.hidden(Tier.LARGE, Tier.SMALL, 26)  # 78 ms < 80 ms
    assert timing.hidden(Tier.LARGE, Tier.SMALL, 27)
    timing.observe_warm(Tier.LARGE, 40.0)  # EMA: 80 -> 60 ms
    assert timing.hidden(Tier.LARGE, Tier.SMALL, 20) and not timing.hidden(Tier.LARGE, Tier.SMALL, 19)
    timing.observe_decode(Tier.SMALL, 0, 5.0)  # an empty segment says nothing
    assert timing.decode_ms_per_token[Tier.SMALL] == 3.0


def test_no_warm_up_at_the_end_of_a_segment_once_it_is_known_to_be_too_slow():
    from relay_ray.controller.prefill_ahead import WarmTiming

    large = ScriptedTier(Tier.LARGE, VOCAB, DOC, block_size=16)
    small = ScriptedTier(Tier.SMALL, VOCAB, DOC, block_size=16)
    controller = RelayController({Tier.LARGE: large, Tier.SMALL: small}, ControllerLimits(prefill_ahead=True))
    # Measured: a large warm-up takes as long as 10 small tokens.
    controller.warm_timing = WarmTiming(decode_ms_per_token={Tier.SMALL: 1.0}, warm_ms={Tier.LARGE: 10.0})
    controller.warm_timing.observe_decode = lambda *a: None  # keep the scripted estimates
    controller.warm_timing.observe_warm = lambda *a: None
    request = RelayRequest(PromptInput(text="Q: "), "fixed-ratio", {"large_tokens": 8, "small_tokens": 24},
                           max_new_tokens=64)

    async def go() -> None:
        async for _ in controller.generate(request):
            pass
        await asyncio.gather(*controller._background)

    asyncio.run(go())
    # Small segments start at prefix lengths 9 and 41 (1 prompt token + output). Block ends
    # inside them: 16 (7 written, 17 left: warm), 32 (23 written, 1 left: too late),
    # 48 (7 written, 17 left: warm), 64 (23 written, 1 left: too late).
    warm = [len(j.prefix_token_ids) for j in large.jobs if j.prefill_only]
    assert warm == [16, 48]
