"""The controller's relay loop over scripted tiers: limits, final deltas, segment migration
after tier faults, deadlines, cancellation. Scripted tiers run the real SegmentRun."""

from __future__ import annotations

import asyncio
import math

import pytest

from relay_ray.controller import ControllerLimits, RelayController, RelayResult, SegmentFinished, TextDelta
from relay_ray.controller.attempts import RetryPolicy
from relay_ray.controller.limits import InputLimits
from relay_ray.errors import FailureCause, RelayDeadlineError, RelayInputError, TierUnavailableError
from relay_ray.types import FinishReason, PromptInput, RelayRequest, SegmentDelta, SegmentJob, Tier
from tests.unit.fakes import EOS, ScriptedTier

VOCAB = ["</s>", "Q: ", "a", " b", " So", ",", " c", ".", " d", "<call>", "5", "</call>", "</think>", "\n",
         "<think>", "x", "y"]
W = {w: i for i, w in enumerate(VOCAB)}


def ids(*words: str) -> list[int]:
    return [W[w] for w in words]


DOC = ids("a", " b", " c", " d", "a", " So", ",", " c", " d", ".", " b", " b", " c", " So", " b", ".", " d") * 2 + [EOS]
ENTROPY = [0.9 if i % 3 == 0 else 0.1 for i in range(len(DOC))]
POLICIES = [
    ("fixed-ratio", {"large_tokens": 3, "small_tokens": 2}),
    ("relaygen", {"cues": [" So"], "sentence_ends": ["."], "min_tokens_after_return": 0}),
    ("rstitch", {"tau": 0.5}),
    ("random", {"large_share": 0.3, "mean_large_tokens": 2}),
]
FAST_RETRY = {tier: RetryPolicy(migration_limit=3, backoff_s=0.001, stall_timeout_s=5.0) for tier in Tier}


class FlakyTier:
    """Wraps a tier; its segment streams fail (like a dead replica) after ``after_tokens``
    streamed tokens, ``failures`` times in all."""

    def __init__(self, inner: ScriptedTier, failures: int, after_tokens: int = 2,
                 cause: FailureCause = FailureCause.REPLICA_DIED, silent: bool = False) -> None:
        self.inner, self.failures, self.after_tokens, self.cause, self.silent = inner, failures, after_tokens, cause, silent
        self.jobs: list[SegmentJob] = []

    async def describe(self):
        return await self.inner.describe()

    async def prepare(self, prompt):
        return await self.inner.prepare(prompt)

    async def stream_segment(self, job: SegmentJob):
        self.jobs.append(job)
        sent = 0
        async for item in self.inner.stream_segment(job):
            if self.failures > 0 and not job.prefill_only and sent >= self.after_tokens:
                self.failures -= 1
                if self.silent:  # the stream just ends: no result
                    return
                raise TierUnavailableError("replica died", self.cause)
            if isinstance(item, SegmentDelta):
                sent += len(item.token_ids)
            yield item


def controller(large, small, **limits) -> RelayController:
    return RelayController({Tier.LARGE: large, Tier.SMALL: small},
                           ControllerLimits(stream_interval_tokens=1, retry=FAST_RETRY, **limits))


def scripted(doc=DOC, entropies=ENTROPY, **kw) -> tuple[ScriptedTier, ScriptedTier]:
    return (ScriptedTier(Tier.LARGE, VOCAB, doc, entropies, **kw), ScriptedTier(Tier.SMALL, VOCAB, doc, entropies, **kw))


def run(ctl: RelayController, policy: str, params: dict | None = None, max_new_tokens: int = 64,
        prompt: str = "Q: ", timeout_s: float | None = None, request_id: str = "r1") -> tuple[RelayResult, list]:
    async def go():
        events = []
        request = RelayRequest(PromptInput(text=prompt), policy, params or {}, max_new_tokens=max_new_tokens,
                               request_id=request_id)
        async for ev in ctl.generate(request, stream_text=True, timeout_s=timeout_s):
            events.append(ev)
        return events[-1], events
    return asyncio.run(go())


def deltas_by_segment(events) -> dict[int, str]:
    out: dict[int, str] = {}
    for ev in events:
        if isinstance(ev, TextDelta):
            out[ev.segment_index] = out.get(ev.segment_index, "") + ev.text
    return out


def test_max_segments_stops_the_request():
    large, small = scripted()
    ctl = controller(large, small, max_segments=3, input=InputLimits(min_fixed_segment_tokens=1))
    result, _ = run(ctl, "fixed-ratio", {"large_tokens": 1, "small_tokens": 1})
    assert result.stats.finish_reason is FinishReason.MAX_SEGMENTS and result.stats.num_segments == 3


def test_a_stream_without_a_result_is_re_run():
    large, small = scripted()
    flaky = FlakyTier(small, failures=1, silent=True)
    result, _ = run(controller(large, flaky), "small-only")
    assert list(result.token_ids) == DOC and result.stats.num_migrations == 1
    zero = {tier: RetryPolicy(migration_limit=0) for tier in Tier}
    ctl = RelayController({Tier.LARGE: large, Tier.SMALL: FlakyTier(small, failures=1, silent=True)},
                          ControllerLimits(stream_interval_tokens=1, retry=zero))
    with pytest.raises(TierUnavailableError) as failed:
        run(ctl, "small-only")
    assert failed.value.cause is FailureCause.NO_RESULT


def test_budget_inside_an_open_think_block_closes_it():
    doc = ids("a", " b", " c", " d", "a", " b", " c", " d") + [EOS]
    large, small = scripted(doc, [0.1] * len(doc))
    result, _ = run(controller(large, small), "relaygen", {"cues": [" So"]}, max_new_tokens=5, prompt="Q: <think>")
    assert result.text.endswith("\n</think>") and result.stats.finish_reason is FinishReason.BUDGET
    assert list(result.token_ids[-2:]) == ids("\n", "</think>")
    # No open block in the prompt: nothing is appended.
    result, _ = run(controller(large, small), "relaygen", {"cues": [" So"]}, max_new_tokens=5)
    assert "</think>" not in result.text


# The small model asks for 5 tokens at position 2; positions 2-6 are then the large model's
# (the small document's "y" there is never used); later a malformed command stays in the text.
CALL_DOC = ids("a", " b", "<call>", "5", "</call>", "y", "y", " c", " d", ".", " b", "<call>", "x", " d") + [EOS]


@pytest.mark.parametrize("policy,params,doc", [
    ("relayllm", {"max_calls": 4}, CALL_DOC),
    ("rstitch", {"tau": 0.5}, DOC),
    ("relaygen", {"cues": [" So"], "sentence_ends": ["."], "min_tokens_after_return": 0}, DOC),
])
def test_streamed_deltas_are_final(policy, params, doc):
    """Deltas of each segment concatenate to its committed text; all of them to the answer."""
    entropies = [0.9 if i % 3 == 0 else 0.1 for i in range(len(doc))]
    large, small = scripted(doc, entropies)
    if policy == "relayllm":
        large = ScriptedTier(Tier.LARGE, VOCAB, ids(*[" d"] * len(doc)))
    result, events = run(controller(large, small), policy, params)
    streamed = deltas_by_segment(events)
    ends = [ev.record for ev in events if isinstance(ev, SegmentFinished)]
    assert all(streamed.get(rec.index, "") == rec.text for rec in ends)
    assert "".join(ev.text for ev in events if isinstance(ev, TextDelta)) == result.text
    if policy == "relayllm":  # the command was removed, not streamed and taken back
        assert result.text == "a b d d d d d c d. b<call>x d" and result.stats.num_switches == 2
        assert any(isinstance(ev, TextDelta) and "<call>" in ev.text for ev in events)  # the malformed one


@pytest.mark.parametrize("policy,params", POLICIES)
@pytest.mark.parametrize("failing", [Tier.LARGE, Tier.SMALL])
def test_migrated_segments_give_the_fault_free_answer(policy, params, failing):
    large, small = scripted()
    clean, clean_events = run(controller(*scripted()), policy, params)
    tiers = {Tier.LARGE: large, Tier.SMALL: small}
    flaky = FlakyTier(tiers[failing], failures=3, after_tokens=1)
    tiers[failing] = flaky
    result, events = run(controller(tiers[Tier.LARGE], tiers[Tier.SMALL]), policy, params)
    assert list(result.token_ids) == list(clean.token_ids) == DOC
    assert result.text == clean.text
    assert result.stats.num_migrations == 3 - flaky.failures > 0
    # No delta delivered twice, none lost.
    assert "".join(ev.text for ev in events if isinstance(ev, TextDelta)) == result.text
    # Re-runs resumed from what had been received (never from scratch once tokens arrived).
    resumed = [j for j in flaky.jobs if j.resume_token_ids]
    assert resumed and all(len(j.resume_token_ids) >= 1 for j in resumed)
    assert [s.tier for s in result.segments] == [s.tier for s in clean.segments]


def test_too_many_faults_fail_the_request_with_the_cause():
    large, small = scripted()
    ctl = controller(large, FlakyTier(small, failures=10, cause=FailureCause.ENGINE_DEAD))
    with pytest.raises(TierUnavailableError) as failed:
        run(ctl, "small-only")
    assert failed.value.cause is FailureCause.ENGINE_DEAD


class HangingTier(ScriptedTier):
    """Streams ``after`` deltas, then never answers again (a stopped process)."""

    def __init__(self, *args, after: int = 1, **kw) -> None:
        super().__init__(*args, **kw)
        self.after, self.closed = after, 0

    async def stream_segment(self, job):
        sent = 0
        try:
            async for item in super().stream_segment(job):
                if sent >= self.after:
                    await asyncio.sleep(3600)
                sent += 1
                yield item
        finally:
            self.closed += 1


def test_the_deadline_bounds_a_hanging_tier_and_closes_its_stream():
    small = HangingTier(Tier.SMALL, VOCAB, DOC, ENTROPY)
    large = ScriptedTier(Tier.LARGE, VOCAB, DOC, ENTROPY)
    with pytest.raises(RelayDeadlineError):
        run(controller(large, small), "small-only", timeout_s=0.3)
    assert small.closed == 1  # the stream was closed: a real tier aborts its engine request


def test_a_stalled_stream_counts_as_a_dead_replica():
    small = HangingTier(Tier.SMALL, VOCAB, DOC, ENTROPY, after=2)
    large = ScriptedTier(Tier.LARGE, VOCAB, DOC, ENTROPY)
    retry = {tier: RetryPolicy(migration_limit=1, backoff_s=0.001, stall_timeout_s=0.2) for tier in Tier}
    ctl = RelayController({Tier.LARGE: large, Tier.SMALL: small}, ControllerLimits(stream_interval_tokens=1,
                                                                                     retry=retry))
    with pytest.raises(TierUnavailableError) as failed:
        run(ctl, "small-only")
    assert failed.value.cause is FailureCause.STALLED and small.closed == 2


def test_cancelling_a_request_closes_its_segment_and_warm_up_jobs():
    small = HangingTier(Tier.SMALL, VOCAB, DOC, ENTROPY, after=3, block_size=4)
    large = HangingTier(Tier.LARGE, VOCAB, DOC, ENTROPY, after=0, block_size=4)  # warm-ups hang
    ctl = RelayController({Tier.LARGE: large, Tier.SMALL: small},
                          ControllerLimits(stream_interval_tokens=1, prefill_ahead=True, retry=FAST_RETRY,
                                           prefill_ahead_tiers=frozenset(Tier)))

    async def go():
        request = RelayRequest(PromptInput(text="Q: "), "rstitch", {"tau": 0.99}, max_new_tokens=30)

        async def consume():
            async for _ in ctl.generate(request, stream_text=True):
                pass
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        assert ctl._background  # warm-up jobs were running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        return len(ctl._background)
    assert asyncio.run(go()) == 0
    assert small.closed == 1 and large.closed >= 1


def test_concurrent_requests_share_the_warm_timing_and_stay_exact():
    large, small = scripted(block_size=4)
    ctl = RelayController({Tier.LARGE: large, Tier.SMALL: small},
                          ControllerLimits(stream_interval_tokens=1, prefill_ahead=True, retry=FAST_RETRY))

    async def go():
        async def one(i):
            request = RelayRequest(PromptInput(text="Q: "), "fixed-ratio", {"large_tokens": 3, "small_tokens": 5},
                                   max_new_tokens=40, request_id=f"c{i}")
            async for ev in ctl.generate(request):
                last = ev
            return last
        results = await asyncio.gather(*(one(i) for i in range(6)))
        await asyncio.gather(*ctl._background)
        return results
    results = asyncio.run(go())
    assert all(list(r.token_ids) == DOC[:40] for r in results)
    timing = ctl.warm_timing
    assert set(timing.decode_ms_per_token) == {Tier.LARGE, Tier.SMALL}  # learned from all requests
    assert all(v >= 0 and not math.isnan(v) for v in timing.decode_ms_per_token.values())
    warm_jobs = [j for j in large.jobs if j.prefill_only]
    assert warm_jobs and all(len(j.prefix_token_ids) % 4 == 0 for j in warm_jobs)
    assert {j.request_id for j in warm_jobs} <= {f"c{i}" for i in range(6)}


class CountingPrepare(ScriptedTier):
    prepared = 0

    async def prepare(self, prompt):
        self.prepared += 1
        return await super().prepare(prompt)


def test_a_prompt_that_cannot_fit_is_refused_before_tokenizing():
    large = CountingPrepare(Tier.LARGE, VOCAB, DOC, ENTROPY, max_model_len=64)
    small = CountingPrepare(Tier.SMALL, VOCAB, DOC, ENTROPY, max_model_len=32)
    ctl = controller(large, small, input=InputLimits(max_prompt_bytes_per_token=4))
    with pytest.raises(RelayInputError, match="cannot fit the model context of 32 tokens"):
        run(ctl, "large-only", prompt="Q: " + "a" * 200)
    assert large.prepared == small.prepared == 0
    with pytest.raises(RelayInputError, match="99 prompt tokens"):  # 101 bytes < 32 * 4: tokenized, then refused
        run(ctl, "large-only", prompt="Q: " + "a" * 98)
    assert large.prepared == 1
    result, _ = run(ctl, "large-only", prompt="Q: " + "a" * 4, max_new_tokens=4)
    assert large.prepared == 2 and result.stats.num_tokens == 4
