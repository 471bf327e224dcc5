"""Prefill-ahead: the idle tier gets whole-block prefill jobs while the other tier generates."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from relay_ray.controller import RelayController, RelayResult
from relay_ray.controller.observer import RelayObserver
from relay_ray.controller.prefill_ahead import PrefillAheadPlanner
from relay_ray.controller.validate import ControllerLimits
from relay_ray.engines.segment_run import delta_due
from relay_ray.types import (
    PromptInput, RelayRequest, SegmentDelta, SegmentJob, SegmentResult, SegmentTiming, StopRule, Tier,
)
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

    return drive(controller, request), large, small


def drive(controller: RelayController, request: RelayRequest) -> RelayResult:
    """Run ``request`` to its result, then let the warm-up jobs it started land."""
    async def go() -> RelayResult:
        async for event in controller.generate(request):
            result = event
        await asyncio.gather(*controller._background)
        return result

    return asyncio.run(go())


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


class DeltaLog(ScriptedTier):
    """A scripted tier that records the prefix length reached at each delta it streams."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.delta_ends: list[int] = []

    async def stream_segment(self, job):
        reached = len(job.prefix_token_ids)
        async for item in super().stream_segment(job):
            if isinstance(item, SegmentDelta):
                reached += len(item.token_ids)
                self.delta_ends.append(reached)
            yield item


def test_each_block_the_small_tier_completes_is_warmed_on_the_large_tier_at_once():
    large = ScriptedTier(Tier.LARGE, VOCAB, DOC, block_size=16)
    small = DeltaLog(Tier.SMALL, VOCAB, DOC, block_size=16)
    # A clock that never moves: every warm-up counts as hidden, so timing decides nothing.
    controller = RelayController({Tier.LARGE: large, Tier.SMALL: small}, ControllerLimits(prefill_ahead=True),
                                 clock=lambda: 0.0)
    request = RelayRequest(PromptInput(text="Q: "), "fixed-ratio", {"large_tokens": 8, "small_tokens": 24},
                           max_new_tokens=128)

    drive(controller, request)
    # Small segments cover prefix lengths 9..33, 41..65, 73..97 and 105..129 (one prompt
    # token); the large tier computed up to 32, 64 and 96 itself before the next three. So the
    # blocks to warm end at 16, 32 | 48, 64 | 80, 96 | 112, 128: the small tier streams a delta
    # exactly there (not a token later) and each becomes one warm job of that length.
    assert small.delta_ends == [16, 32, 48, 64, 80, 96, 112, 128]
    assert [len(j.prefix_token_ids) for j in large.jobs if j.prefill_only] == small.delta_ends


def test_no_prefill_ahead_when_turned_off_or_block_size_unknown():
    for block_size, enabled in ((16, False), (0, True)):
        result, large, small = _relay(block_size=block_size, prefill_ahead=enabled)
        assert list(result.token_ids) == DOC[:128]
        assert not any(j.prefill_only for j in large.jobs + small.jobs)
        assert all(j.stream_interval_tokens == 0 for j in large.jobs + small.jobs)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s

    def spend(self, ms: float) -> None:
        self.now_s += ms / 1000.0


class TimedTier(ScriptedTier):
    """A scripted tier whose calls take known time on ``clock``: ``wire_ms`` on the way in and
    again on the way out, ``engine_ms_per_token`` inside (reported as the segment's timing)."""

    def __init__(self, tier: Tier, clock: FakeClock, wire_ms: float, engine_ms_per_token: float) -> None:
        super().__init__(tier, VOCAB, DOC)
        self.clock, self.wire_ms, self.engine_ms_per_token = clock, wire_ms, engine_ms_per_token

    async def stream_segment(self, job):
        self.clock.spend(self.wire_ms)
        async for item in super().stream_segment(job):
            if isinstance(item, SegmentResult):
                engine_ms = self.engine_ms_per_token * len(item.token_ids)
                self.clock.spend(engine_ms + self.wire_ms)
                item = replace(item, timing=SegmentTiming(decode_ms=engine_ms, total_ms=engine_ms))
            yield item


class SlowObserver(RelayObserver):
    """The controller's own work before each tier call: ``ms`` on the clock."""

    def __init__(self, clock: FakeClock, ms: float) -> None:
        self.clock, self.ms = clock, ms

    def segment(self, job, tier, policy):
        self.clock.spend(self.ms)
        return super().segment(job, tier, policy)


def test_handoff_time_is_the_time_spent_outside_the_engines():
    clock = FakeClock()
    wire_ms = {Tier.LARGE: 3.0, Tier.SMALL: 1.5}
    engine_ms = {Tier.LARGE: 4.0, Tier.SMALL: 0.5}
    tiers = {t: TimedTier(t, clock, wire_ms[t], engine_ms[t]) for t in Tier}
    controller = RelayController(tiers, clock=clock, observer=SlowObserver(clock, 2.0))
    request = RelayRequest(PromptInput(text="Q: "), "fixed-ratio", {"large_tokens": 3, "small_tokens": 5},
                           max_new_tokens=32)
    started = clock.now_s
    result = drive(controller, request)
    assert len(result.segments) > 4
    for seg in result.segments:
        assert seg.timing.total_ms == pytest.approx(engine_ms[seg.tier] * seg.num_tokens)
        assert seg.transport_ms == pytest.approx(2 * wire_ms[seg.tier])  # in and out, not the engine
        assert seg.controller_ms == pytest.approx(2.0)
        assert seg.handoff_ms == pytest.approx(2.0 + 2 * wire_ms[seg.tier])
    spent_ms = sum(2.0 + 2 * wire_ms[s.tier] + engine_ms[s.tier] * s.num_tokens for s in result.segments)
    assert result.stats.latency_ms == pytest.approx(spent_ms)
    assert (clock.now_s - started) * 1000.0 == pytest.approx(spent_ms)


def test_single_tier_policies_never_warm_the_other_tier():
    large = ScriptedTier(Tier.LARGE, VOCAB, DOC, block_size=16)
    small = ScriptedTier(Tier.SMALL, VOCAB, DOC, block_size=16)
    controller = RelayController({Tier.LARGE: large, Tier.SMALL: small}, ControllerLimits(prefill_ahead=True))

    for policy in ("small-only", "large-only"):
        drive(controller, RelayRequest(PromptInput(text="Q: "), policy, max_new_tokens=64))
    assert not any(j.prefill_only or j.stream_interval_tokens for j in large.jobs + small.jobs)


def test_the_prompt_is_prefilled_on_the_idle_small_tier_once():
    prompt = "Q: " + "a b" * 20  # 41 tokens: two whole 16-token blocks
    large = ScriptedTier(Tier.LARGE, VOCAB, DOC, block_size=16, prompt=prompt)
    small = ScriptedTier(Tier.SMALL, VOCAB, DOC, block_size=16, prompt=prompt)
    controller = RelayController({Tier.LARGE: large, Tier.SMALL: small}, ControllerLimits(prefill_ahead=True))
    request = RelayRequest(PromptInput(text=prompt), "fixed-ratio", {"large_tokens": 8, "small_tokens": 24},
                           max_new_tokens=96)

    drive(controller, request)
    warm_small = [j for j in small.jobs if j.prefill_only]
    assert [len(j.prefix_token_ids) for j in warm_small] == [32]
    assert warm_small[0].segment_index == 0


def _progress(num_generated: int, budget_left: int, can_stop_early: bool = False, policy: str = "rstitch"):
    from relay_ray.controller.prefill_ahead import SegmentProgress

    return SegmentProgress(policy, Tier.SMALL, num_generated, budget_left, can_stop_early)


def test_warm_timing_hides_a_warm_up_only_behind_enough_remaining_tokens():
    from relay_ray.controller.prefill_ahead import WarmTiming

    timing = WarmTiming(alpha=0.5)
    assert timing.hidden(Tier.LARGE, _progress(0, 0))  # no estimates yet: warm
    timing.observe_decode(Tier.SMALL, 24, 72.0)  # 3 ms per small token
    timing.observe_warm(Tier.LARGE, 80.0)
    assert not timing.hidden(Tier.LARGE, _progress(0, 26))  # 78 ms < 80 ms
    assert timing.hidden(Tier.LARGE, _progress(0, 27))
    timing.observe_warm(Tier.LARGE, 40.0)  # EMA: 80 -> 60 ms
    assert timing.hidden(Tier.LARGE, _progress(5, 20)) and not timing.hidden(Tier.LARGE, _progress(5, 19))
    timing.observe_decode(Tier.SMALL, 0, 5.0)  # an empty segment says nothing
    assert timing.decode_ms_per_token[Tier.SMALL] == 3.0


def test_a_segment_that_may_stop_early_is_judged_by_the_policys_recent_segment_lengths():
    from relay_ray.controller.prefill_ahead import WarmTiming

    timing = WarmTiming(decode_ms_per_token={Tier.SMALL: 1.0}, warm_ms={Tier.LARGE: 10.0}, min_samples=4)
    for n in (9, 9, 9, 9, 30, 30, 30, 30):  # segments end at 9 or at 30 tokens
        timing.observe_segment("rstitch", Tier.SMALL, n)
    # 2 written: half the segments end within the next 10 tokens (at 9), half run to 30.
    assert timing.outlast_probability("rstitch", Tier.SMALL, 2, 10) == 0.5
    assert timing.hidden(Tier.LARGE, _progress(2, 100, can_stop_early=True))
    # 12 written: every segment still running is one of the 30-token ones; 18 more to come.
    assert timing.outlast_probability("rstitch", Tier.SMALL, 12, 10) == 1.0
    assert timing.hidden(Tier.LARGE, _progress(12, 100, can_stop_early=True))
    # 25 written: 5 more to come, a warm-up needs 10: it would still run at the switch.
    assert timing.outlast_probability("rstitch", Tier.SMALL, 25, 10) == 0.0
    assert not timing.hidden(Tier.LARGE, _progress(25, 100, can_stop_early=True))
    # A fixed-length segment knows its remainder: its budget decides alone.
    assert timing.hidden(Tier.LARGE, _progress(25, 100, can_stop_early=False))
    # Other policies have their own lengths; too few recorded: no opinion (warm).
    assert timing.outlast_probability("relaygen", Tier.SMALL, 25, 10) is None
    assert timing.hidden(Tier.LARGE, _progress(25, 100, can_stop_early=True, policy="relaygen"))
    # Past every recorded length: taken to end soon (no evidence it runs on).
    assert timing.outlast_probability("rstitch", Tier.SMALL, 40, 10) == 0.0
    assert not timing.hidden(Tier.LARGE, _progress(40, 100, can_stop_early=True))
    # A sparse tail counts as short: 2 of 4 recorded segments ran past 40, both long enough.
    timing.observe_segment("rstitch", Tier.SMALL, 60)
    timing.observe_segment("rstitch", Tier.SMALL, 60)
    assert timing.outlast_probability("rstitch", Tier.SMALL, 40, 10) == 2 / 4
    # hide_probability 0 trusts the budget alone (the behaviour before the gate).
    assert WarmTiming(decode_ms_per_token={Tier.SMALL: 1.0}, warm_ms={Tier.LARGE: 10.0}, hide_probability=0.0,
                      segment_lengths=timing.segment_lengths).hidden(Tier.LARGE, _progress(25, 100, True))


def test_segment_lengths_keep_only_the_recent_history():
    from relay_ray.controller.prefill_ahead import WarmTiming

    timing = WarmTiming(history=4, min_samples=1)
    for n in (50, 50, 50, 50, 5, 5, 5, 5):
        timing.observe_segment("rstitch", Tier.SMALL, n)
    assert list(timing.segment_lengths[("rstitch", Tier.SMALL)]) == [5, 5, 5, 5]
    assert timing.outlast_probability("rstitch", Tier.SMALL, 0, 10) == 0.0


def test_the_generating_tiers_pace_comes_from_its_deltas_not_its_prefill():
    """Two deltas 16 tokens and 32 ms apart: 2 ms per token, whatever the segment's first
    token cost (a slow prefill would make a warm-up look shorter in tokens than it is)."""
    large = ScriptedTier(Tier.LARGE, VOCAB, DOC, block_size=16)
    small = ScriptedTier(Tier.SMALL, VOCAB, DOC, block_size=16)
    ticks = iter(range(0, 10_000_000, 2))  # the controller's clock: 2 ms per reading
    controller = RelayController({Tier.LARGE: large, Tier.SMALL: small}, ControllerLimits(prefill_ahead=True),
                                 clock=lambda: next(ticks) / 1000.0)
    seen = []
    observe = controller.warm_timing.observe_decode
    controller.warm_timing.observe_decode = lambda tier, n, ms: (seen.append((tier, n, ms)), observe(tier, n, ms))
    drive(controller, RelayRequest(PromptInput(text="Q: "), "fixed-ratio", {"large_tokens": 8, "small_tokens": 40},
                                   max_new_tokens=64))
    from_deltas = [(n, ms) for tier, n, ms in seen if tier is Tier.SMALL and n == 16]
    assert from_deltas and all(ms > 0 for _, ms in from_deltas)
    # once deltas gave a pace, whole segments (prefill included) no longer feed the estimate
    small_obs = [n for tier, n, _ in seen if tier is Tier.SMALL]
    assert small_obs[small_obs.index(16):].count(40) == 0


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

    drive(controller, request)
    # Small segments start at prefix lengths 9 and 41 (1 prompt token + output). Block ends
    # inside them: 16 (7 written, 17 left: warm), 32 (23 written, 1 left: too late),
    # 48 (7 written, 17 left: warm), 64 (23 written, 1 left: too late).
    warm = [len(j.prefix_token_ids) for j in large.jobs if j.prefill_only]
    assert warm == [16, 48]


@pytest.mark.parametrize("hide_probability", [0.0, 0.5])
def test_warm_ups_late_in_an_entropy_stopped_segment_wait_for_the_recent_lengths(hide_probability):
    from relay_ray.controller.prefill_ahead import WarmTiming

    # rstitch over scripted entropies: the small tier stops before output positions 20, 60, 100
    # and 140; the large tier writes that position and the next one.
    entropies = [1.0 if p in (20, 60, 100, 140) else 0.0 for p in range(len(DOC))]
    large = ScriptedTier(Tier.LARGE, VOCAB, DOC, entropies, block_size=16)
    small = ScriptedTier(Tier.SMALL, VOCAB, DOC, entropies, block_size=16)
    controller = RelayController({Tier.LARGE: large, Tier.SMALL: small},
                                 ControllerLimits(prefill_ahead=True, prefill_ahead_hide_probability=hide_probability))
    # Measured: a large warm-up lasts as long as 10 small tokens, and recent small segments of
    # this policy all wrote 21 tokens (20 kept, 1 dropped).
    timing = WarmTiming(hide_probability=hide_probability, decode_ms_per_token={Tier.SMALL: 1.0},
                        warm_ms={Tier.LARGE: 10.0})
    for _ in range(8):
        timing.observe_segment("rstitch", Tier.SMALL, 21)
    timing.observe_decode = timing.observe_warm = timing.observe_segment = lambda *a: None
    controller.warm_timing = timing
    request = RelayRequest(PromptInput(text="Q: "), "rstitch", {"tau": 0.5}, max_new_tokens=150)

    result = drive(controller, request)
    assert result.token_ids == tuple(DOC[:150])
    starts = [len(j.prefix_token_ids) for j in small.jobs if not j.prefill_only]
    assert starts == [1, 23, 63, 103, 143]
    warm = [len(j.prefix_token_ids) for j in large.jobs if j.prefill_only]
    # The last segment (from 143) has 8 tokens of budget left: never enough to hide a warm-up.
    if hide_probability == 0:  # every other block end
        assert warm == [16, 32, 48, 64, 80, 96, 112, 128]
    else:
        # Block ends that come 11 or fewer tokens into a segment (32: 9 in, 64: 1 in, 112: 9
        # in) leave the 10 tokens a warm-up needs before the usual end at 21; at 16 (15 in) and
        # 80 (17 in) the recent lengths say the switch comes first; past 21 tokens (48: 25 in,
        # 96: 33 in, 128: 25 in) no recent segment ran as long: taken to end soon, no warm-up.
        assert warm == [32, 64, 112]
