"""The controller's side of KV sessions: which jobs ask a tier to keep the request's KV,
how prefill-ahead feeds a session tier while the other tier writes, and the end of a session."""

from __future__ import annotations

import asyncio

import pytest

from relay_ray.controller import RelayController, RelayResult
from relay_ray.controller.prefill_ahead import PrefillAheadPlanner, WarmTiming
from relay_ray.controller.validate import ControllerLimits
from relay_ray.types import KvSession, PromptInput, RelayRequest, Tier
from tests.unit.fakes import ScriptedTier

VOCAB = ["</s>", "Q: ", "a", " b", " c", " d"]
DOC = [2, 3, 4, 5] * 40


class PacedTier(ScriptedTier):
    """Takes time per token and per prefill job, and records how many prefills overlap."""

    def __init__(self, *args, feed_s: float = 0.004, fail: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.feed_s, self.fail = feed_s, fail
        self.inflight = self.max_inflight = 0

    async def stream_segment(self, job):
        if job.prefill_only:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            try:
                await asyncio.sleep(self.feed_s)
                async for item in super().stream_segment(job):
                    yield item
            finally:
                self.inflight -= 1
            return
        if self.fail and job.kv_session is not KvSession.END:
            raise RuntimeError("a bug in the tier")
        async for item in super().stream_segment(job):
            await asyncio.sleep(0.0005 * max(1, len(item.token_ids)))  # 0.5 ms per token
            yield item


def _run(policy: str, params: dict, limits: ControllerLimits, fail_small: bool = False):
    large = PacedTier(Tier.LARGE, VOCAB, DOC, block_size=16)
    small = PacedTier(Tier.SMALL, VOCAB, DOC, block_size=16, fail=fail_small)
    controller = RelayController({Tier.LARGE: large, Tier.SMALL: small}, limits)
    # Fixed estimates (the tiers' pace: 0.5 ms per token; a feed: 4 ms), so the feeds the timing
    # gate lets through do not depend on how busy the machine running the test is.
    timing = WarmTiming(decode_ms_per_token={tier: 0.5 for tier in Tier}, warm_ms={tier: 4.0 for tier in Tier})
    timing.observe_decode = timing.observe_warm = lambda *a: None
    controller.warm_timing = timing
    request = RelayRequest(PromptInput(text="Q: "), policy, params, max_new_tokens=128)

    async def go() -> RelayResult | Exception:
        result = None
        try:
            async for event in controller.generate(request):
                result = event
        except RuntimeError as exc:
            result = exc
        await asyncio.sleep(0.01)
        await asyncio.gather(*controller._background, return_exceptions=True)
        return result

    return asyncio.run(go()), large, small


SESSIONS = dict(prefill_ahead=True, kv_session_tiers=frozenset({Tier.LARGE}), feed_interval_tokens=4)
FIXED = {"large_tokens": 8, "small_tokens": 24}


def test_a_session_tier_is_fed_every_token_one_feed_at_a_time():
    result, large, small = _run("fixed-ratio", FIXED, ControllerLimits(**SESSIONS))
    assert list(result.token_ids) == DOC[:128]
    segments = [j for j in large.jobs if not j.prefill_only and j.kv_session is not KvSession.END]
    assert segments and all(j.kv_session is KvSession.KEEP for j in segments)
    assert all(j.kv_session is KvSession.NONE for j in small.jobs)
    feeds = [j for j in large.jobs if j.prefill_only]
    assert len(feeds) > len(segments), "the small tier's segments should feed the large tier several times"
    assert all(j.kv_session is KvSession.KEEP for j in feeds)
    assert any(len(j.prefix_token_ids) % 16 for j in feeds), "feeds are not limited to whole blocks"
    for job in feeds:
        n = len(job.prefix_token_ids)
        assert list(job.prefix_token_ids[1:]) == DOC[:n - 1]  # a true prefix of the answer
    assert large.max_inflight == 1
    # The small tier reports every feed interval (absolute positions) while the large tier waits.
    assert all(j.stream_block_tokens == 4 for j in small.jobs if not j.prefill_only)
    # Feeds within one small segment grow by at least the feed interval.
    by_segment: dict[int, list[int]] = {}
    for job in feeds:
        by_segment.setdefault(job.segment_index, []).append(len(job.prefix_token_ids))
    for lengths in by_segment.values():
        assert all(b - a >= 4 for a, b in zip(lengths, lengths[1:]))
    # The request's end releases the session: one END, to the large tier only, after everything.
    ends = [j for j in large.jobs if j.kv_session is KvSession.END]
    assert len(ends) == 1 and large.jobs[-1].kv_session is KvSession.END
    assert not any(j.kv_session is KvSession.END for j in small.jobs)


def test_sessions_without_prefill_ahead_keep_the_kv_but_send_no_feeds():
    limits = ControllerLimits(kv_session_tiers=frozenset({Tier.LARGE}))
    result, large, small = _run("fixed-ratio", FIXED, limits)
    assert list(result.token_ids) == DOC[:128]
    assert not any(j.prefill_only for j in large.jobs + small.jobs)
    assert [j.kv_session for j in large.jobs] == [KvSession.KEEP] * 4 + [KvSession.END]


@pytest.mark.parametrize("policy", ["large-only", "small-only"])
def test_single_tier_policies_never_ask_for_a_session(policy):
    result, large, small = _run(policy, {}, ControllerLimits(**SESSIONS))
    assert all(j.kv_session is KvSession.NONE for j in large.jobs + small.jobs)


def test_a_failed_request_still_ends_its_sessions():
    result, large, small = _run("fixed-ratio", FIXED, ControllerLimits(**SESSIONS), fail_small=True)
    assert isinstance(result, RuntimeError)
    assert large.jobs[-1].kv_session is KvSession.END


def test_planner_feeds_whole_prefixes_paced_by_the_feed_in_flight():
    planner = PrefillAheadPlanner({Tier.LARGE: 32, Tier.SMALL: 32}, feed_tiers=frozenset({Tier.LARGE}),
                                  feed_interval_tokens=4)
    assert planner.stream_block(Tier.LARGE) == 4 and planner.stream_block(Tier.SMALL) == 0
    assert planner.warm_length(Tier.LARGE, 7) == 7  # the prompt opens the session
    assert planner.warm_length(Tier.LARGE, 13) == 0  # one feed at a time
    planner.fed(Tier.LARGE)
    assert planner.warm_length(Tier.LARGE, 10) == 0  # fewer than 4 new tokens
    assert planner.warm_length(Tier.LARGE, 13) == 13
    planner.fed(Tier.LARGE)
    planner.ran(Tier.LARGE, 40)  # a large segment: the session holds 40 tokens
    assert planner.warm_length(Tier.LARGE, 42) == 0 and planner.warm_length(Tier.LARGE, 44) == 44
    assert planner.warm_length(Tier.SMALL, 40) == 32  # other tiers: whole blocks, as before
