"""KV sessions (engines/session/) against a fake engine with vLLM's streaming-input semantics.

The fake model's next token is a function of the whole context, so a session whose context
went wrong (a token too many or too few) writes different tokens than a plain run: every
test compares against plain generation.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

import pytest

from relay_ray.engines import session as kv
from relay_ray.engines.segment_run import SegmentRun, TokenOutput
from relay_ray.types import Commit, EntropyRule, FinishReason, KvSession, SegmentJob, StopRule

VOCAB = [f"w{i} " for i in range(64)]
UNCERTAIN = 0.9  # entropy of tokens >= 40 (the others: 0.1)


def model(context: list[int]) -> int:
    """The fake model: deterministic in the whole context."""
    return (7 * sum(context[-3:]) + 3 * len(context) + context[0]) % 58 + 3


def entropy(token: int) -> float:
    return UNCERTAIN if token >= 40 else 0.1


def _output(token: int, finish: str | None):
    return SimpleNamespace(outputs=[SimpleNamespace(token_ids=[token], finish_reason=finish, logprobs=None)],
                           finished=False, num_cached_tokens=0)


@dataclass
class FakeEngine:
    """Streaming-input sessions as vLLM 0.32 runs them: a chunk appends its tokens, generates
    up to its max tokens, and its last sampled token is discarded."""

    computed: list[int] = field(default_factory=list)  # tokens computed by each chunk's first step
    aborted: int = 0
    fail_after_chunks: int | None = None  # raise an engine error when this many chunks ran
    eos: int | None = None  # a chunk ends at this token (as vLLM does unless ignore_eos)

    def generate(self, inputs, params, request_id):
        async def stream():
            context: list[int] = []
            chunks = 0
            try:
                async for ids, max_tokens in inputs:
                    chunks += 1
                    if self.fail_after_chunks is not None and chunks > self.fail_after_chunks:
                        raise RuntimeError("engine error")
                    self.computed.append(len(ids))
                    seq = context + list(ids)
                    generated: list[int] = []
                    for i in range(max_tokens):
                        await asyncio.sleep(0)
                        token = model(seq + generated)
                        generated.append(token)
                        last = i == max_tokens - 1 or token == self.eos
                        yield _output(token, ("stop" if token == self.eos else "length") if last else None)
                        if last:
                            break
                    context = seq + generated[:-1]
            except (asyncio.CancelledError, GeneratorExit):  # vLLM aborts the request on both
                self.aborted += 1
                raise
        return stream()


def plain(prefix: list[int], n: int) -> list[int]:
    seq = list(prefix)
    for _ in range(n):
        seq.append(model(seq))
    return seq[len(prefix):]


class Decoder:
    def push(self, token_id: int) -> str:
        return VOCAB[token_id]

    def context_text(self) -> str:
        return ""


def push(run: SegmentRun, out) -> bool:
    for token in out.outputs[0].token_ids:
        if run.push(TokenOutput(token, entropy=entropy(token))):
            return True
    return False


def make_input(ids, max_tokens):
    return list(ids), max_tokens


def _pool(engine: FakeEngine, clock=None, **limits) -> kv.SessionPool:
    lim = kv.SessionLimits(**{"max_sessions": 4, "max_tokens": 10_000, "ttl_s": 60.0, "step_tokens": 2, **limits})

    def factory(request_id: str) -> kv.EngineSession:
        return kv.EngineSession(request_id, lambda inputs: engine.generate(inputs, None, request_id))

    return kv.SessionPool(factory, lim, clock) if clock else kv.SessionPool(factory, lim)


async def _segment(pool: kv.SessionPool, prefix: list[int], stop: StopRule, request_id: str = "r",
                   eos: int | None = None):
    job = SegmentJob(request_id, 0, stop, prefix_token_ids=tuple(prefix), kv_session=KvSession.KEEP)
    run = SegmentRun(job, prefix, Decoder(), max_model_len=4096, eos_token_ids=() if eos is None else (eos,))
    outcome = kv.SessionOutcome()
    async for _ in kv.generate(pool, run, make_input, push, outcome, 0.0):
        pass
    return run.result(), outcome, run


PROMPT = [5, 9, 11, 13, 17, 19, 23]


def test_chunks_never_let_a_rule_fire_inside_them_except_the_last():
    fixed = StopRule(max_new_tokens=10)
    assert kv.next_chunk(fixed, 0, 10, 0, 4) == kv.ChunkSize(10, True)
    cue = StopRule(max_new_tokens=50, min_new_tokens=5, stop_strings=("So",))
    assert kv.next_chunk(cue, 0, 50, 0, 4) == kv.ChunkSize(4, True)  # no rule before the 5th token
    assert kv.next_chunk(cue, 4, 46, 0, 4) == kv.ChunkSize(1, True)
    assert kv.next_chunk(cue, 7, 43, 3, 4) == kv.ChunkSize(1, True)
    assert kv.next_chunk(cue, 8, 42, 4, 4) == kv.ChunkSize(42, False)  # the rest in one chunk
    assert kv.next_chunk(cue, 8, 1, 4, 4) == kv.ChunkSize(1, True)
    ent = StopRule(max_new_tokens=50, entropy=EntropyRule(0.5, above=False))
    assert kv.next_chunk(ent, 0, 50, 0, 0) == kv.ChunkSize(50, False)
    with pytest.raises(ValueError):
        kv.next_chunk(fixed, 10, 0, 0, 4)


def test_a_session_continues_segment_after_segment_computing_only_new_tokens():
    async def go():
        engine = FakeEngine()
        pool = _pool(engine)
        seq = list(PROMPT)
        result, outcome, _ = await _segment(pool, seq, StopRule(max_new_tokens=6))
        assert outcome.used and outcome.finished and outcome.num_cached_tokens == 0
        assert list(result.token_ids) == plain(seq, 6)
        seq += result.token_ids
        seq += plain(seq, 9)  # "the other tier" writes 9 tokens
        result, outcome, _ = await _segment(pool, seq, StopRule(max_new_tokens=5))
        assert list(result.token_ids) == plain(seq, 5)
        # The session held everything but the last token of its previous segment.
        assert outcome.num_cached_tokens == len(PROMPT) + 5
        assert engine.computed == [len(PROMPT), 1 + 9]
        assert pool.num_opened == 1 and pool.num_reused == 1
    asyncio.run(go())


def test_an_entropy_segment_steps_token_by_token_and_keeps_the_session():
    async def go():
        engine = FakeEngine()
        pool = _pool(engine, step_tokens=64)
        seq = list(PROMPT)
        for _ in range(6):  # alternate: an entropy segment in the session, then "the other tier"
            rule = StopRule(max_new_tokens=20, entropy=EntropyRule(0.5, above=False, commit=Commit.INCLUSIVE))
            result, outcome, _ = await _segment(pool, seq, rule)
            expected = plain(seq, 20)
            first_certain = next((i for i, t in enumerate(expected) if entropy(t) < 0.5), 19)
            assert list(result.token_ids) == expected[:first_certain + 1]
            seq += result.token_ids
            seq += plain(seq, 3)
        assert pool.num_opened == 1 and engine.aborted == 0
    asyncio.run(go())


def test_a_rule_firing_inside_a_long_chunk_aborts_and_the_next_job_reopens():
    async def go():
        engine = FakeEngine()
        pool = _pool(engine, step_tokens=0)
        seq = list(PROMPT)
        rule = StopRule(max_new_tokens=30, entropy=EntropyRule(0.5, above=True, commit=Commit.EXCLUSIVE))
        result, outcome, _ = await _segment(pool, seq, rule)
        expected = plain(seq, 30)
        first = next(i for i, t in enumerate(expected) if entropy(t) > 0.5)
        assert first < 29, "the scripted model must produce an uncertain token early"
        assert list(result.token_ids) == expected[:first] and result.num_dropped_tokens == 1
        await asyncio.sleep(0.01)
        assert engine.aborted == 1
        seq += result.token_ids
        result, outcome, _ = await _segment(pool, seq, StopRule(max_new_tokens=4))
        assert list(result.token_ids) == plain(seq, 4)
        assert pool.num_opened == 2 and outcome.num_cached_tokens == 0  # the prefix cache serves it
    asyncio.run(go())


def test_a_dropped_token_makes_the_next_job_reopen_the_session():
    async def go():
        engine = FakeEngine()
        pool = _pool(engine)
        seq = list(PROMPT)
        result, *_ = await _segment(pool, seq, StopRule(max_new_tokens=6))
        seq += result.token_ids[:3]  # a policy kept only 3 of them: the session holds 5
        result, *_ = await _segment(pool, seq, StopRule(max_new_tokens=4))
        assert list(result.token_ids) == plain(seq, 4)
        assert pool.num_opened == 2
    asyncio.run(go())


def test_feeds_queue_in_order_and_the_segment_computes_only_the_tail():
    async def go():
        engine = FakeEngine()
        pool = _pool(engine)
        seq = list(PROMPT)
        assert await kv.feed(pool, "r", seq, make_input)
        seq += plain(seq, 12)
        feeds = [asyncio.create_task(kv.feed(pool, "r", seq[:n], make_input)) for n in (len(PROMPT) + 4,
                                                                                        len(PROMPT) + 9)]
        await asyncio.sleep(0)
        result, outcome, _ = await _segment(pool, seq, StopRule(max_new_tokens=3))
        assert all(await asyncio.gather(*feeds))
        assert list(result.token_ids) == plain(seq, 3)
        assert engine.computed == [len(PROMPT), 4, 5, 3]
        assert outcome.num_cached_tokens == len(PROMPT) + 9
        # A stale feed (the session is already past it) changes nothing.
        assert await kv.feed(pool, "r", seq[:len(PROMPT) + 2], make_input)
        assert pool.num_opened == 1 and engine.computed == [len(PROMPT), 4, 5, 3]
    asyncio.run(go())


def test_eos_inside_a_chunk_ends_the_segment_and_keeps_the_session():
    async def go():
        expected = plain(PROMPT, 40)
        eos = expected[12]
        engine = FakeEngine(eos=eos)
        pool = _pool(engine)
        result, outcome, _ = await _segment(pool, PROMPT, StopRule(max_new_tokens=40), eos=eos)
        assert list(result.token_ids) == expected[:expected.index(eos) + 1]
        assert result.finish_reason is FinishReason.EOS and engine.aborted == 0 and pool.get("r").alive
    asyncio.run(go())


def test_the_pool_refuses_when_full_evicts_idle_sessions_and_reaps_expired_ones():
    async def go():
        now = [0.0]
        engine = FakeEngine()
        pool = _pool(engine, clock=lambda: now[0], max_sessions=1)
        assert await kv.feed(pool, "a", PROMPT, make_input)
        async with pool.checkout("b", PROMPT) as got:  # "a" is idle: evicted
            assert got is not None
            async with pool.checkout("c", PROMPT) as other:  # "b" is busy: no room
                assert other is None
        assert pool.num_refused == 1 and pool.get("a") is None
        pool.end("b")
        assert len(pool) == 0
        # Token bound: a prefix larger than the bound never gets a session.
        small = _pool(engine, max_tokens=5)
        assert not await kv.feed(small, "x", PROMPT, make_input)
        # Idle sessions expire.
        assert await kv.feed(pool, "d", PROMPT, make_input)
        now[0] += 61.0
        async with pool.checkout("e", PROMPT) as got:
            assert got is not None and pool.get("d") is None
    asyncio.run(go())


def test_a_feed_arriving_after_its_request_ended_opens_no_session():
    async def go():
        now = [0.0]
        engine = FakeEngine()
        pool = _pool(engine, clock=lambda: now[0])
        assert await kv.feed(pool, "r", PROMPT, make_input)
        pool.end("r")
        # prefill-ahead's last feed raced the controller's END: it must not reopen a session
        # that nobody would end before the TTL (each holds a vLLM slot and KV blocks)
        assert await kv.feed(pool, "r", PROMPT + plain(PROMPT, 4), make_input)
        assert len(pool) == 0 and pool.num_opened == 1 and engine.computed == [len(PROMPT)]
        async with pool.checkout("r", PROMPT) as got:  # a late generating job runs plainly
            assert got is None
        # other requests are unaffected, and the ended id is forgotten after the TTL
        assert await kv.feed(pool, "s", PROMPT, make_input) and pool.get("s") is not None
        now[0] += 61.0
        assert await kv.feed(pool, "r", PROMPT, make_input) and pool.get("r") is not None
    asyncio.run(go())


def test_cancelling_a_generating_job_aborts_its_session():
    async def go():
        engine = FakeEngine()
        pool = _pool(engine)
        job = SegmentJob("r", 0, StopRule(max_new_tokens=50), prefix_token_ids=tuple(PROMPT),
                         stream_interval_tokens=1, kv_session=KvSession.KEEP)
        run = SegmentRun(job, PROMPT, Decoder(), max_model_len=4096)
        stream = kv.generate(pool, run, make_input, push, kv.SessionOutcome(), 0.0)
        await anext(stream)
        await stream.aclose()  # the caller went away mid-chunk
        await asyncio.sleep(0.01)
        assert engine.aborted == 1 and not pool.get("r").alive
        result, outcome, _ = await _segment(pool, PROMPT, StopRule(max_new_tokens=3))
        assert list(result.token_ids) == plain(PROMPT, 3) and pool.num_opened == 2
    asyncio.run(go())


def test_a_session_lost_midway_leaves_the_tokens_so_far_for_a_plain_finish():
    async def go():
        engine = FakeEngine(fail_after_chunks=2)
        pool = _pool(engine, step_tokens=64)
        rule = StopRule(max_new_tokens=10, stop_token_ids=(1,))  # can stop early: one token per chunk
        result, outcome, run = await _segment(pool, PROMPT, rule)
        assert outcome.used and not outcome.finished
        assert list(run.stopper.token_ids) == plain(PROMPT, 2)  # two chunks ran
    asyncio.run(go())


def test_end_jobs_and_unknown_prefixes_cannot_break_a_plain_result():
    job = SegmentJob("r", 0, StopRule(1), kv_session=KvSession.END)
    assert replace(job, kv_session=KvSession.NONE).kv_session is KvSession.NONE
    assert kv.extends([1, 2], [1, 2, 3]) and not kv.extends([1, 2], [1, 3, 3]) and not kv.extends([1, 2], [1])




def test_every_session_chunk_asks_for_the_same_logprobs_whatever_its_job():
    # vLLM keeps the logprobs setting of a streaming request's first chunk: a session opened by
    # a feed (no logprobs) and continued by an entropy segment killed the engine (the matrix's
    # rstitch + KV sessions at c=16). Every chunk the tier submits asks for the most it serves.
    from relay_ray.config import TierConfig
    from relay_ray.engines.vllm_tier import VllmTierEngine
    from relay_ray.types import EntropyRule, Tier

    tier = VllmTierEngine(Tier.LARGE, TierConfig(model="m", max_logprobs=7))
    feed = SegmentJob("r", 0, StopRule(max_new_tokens=1), prefill_only=True, kv_session=KvSession.KEEP)
    entropy = SegmentJob("r", 1, StopRule(max_new_tokens=8, entropy=EntropyRule(0.3, above=False)),
                         kv_session=KvSession.KEEP)
    chunks = [tier._chunk_inputs(job)([1, 2], 1) for job in (feed, entropy)]
    assert [c.sampling_params.logprobs for c in chunks] == [7, 7]
