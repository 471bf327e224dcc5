"""The engine-free segment run (engines/segment_run.py) against scripted token streams:
stop rules, deltas that are never taken back, signals, resumption after a failure."""

from __future__ import annotations

import math
import random

import pytest

from relay_ray.engines.segment_run import SegmentRun, TokenOutput
from relay_ray.types import (
    CALL_OPEN, Commit, EntropyRule, FinishReason, SegmentJob, SignalRequest, StopRule,
)

VOCAB = ["<eos>", "a", " b", " c", ".", " So", "<", "call", ">", "3", "</", "call>", " d", "e", " x"]
EOS = 0


class WordDecoder:
    def push(self, token_id: int) -> str:
        return VOCAB[token_id] if token_id != EOS else ""

    def context_text(self) -> str:
        return ""


def ids(*words: str) -> list[int]:
    return [VOCAB.index(w) for w in words]


def job(stop: StopRule, interval: int = 1, resume=(), signals=SignalRequest(), block: int = 0) -> SegmentJob:
    return SegmentJob("r", 0, stop, prefix_token_ids=(1, 1, 1), stream_interval_tokens=interval,
                      stream_block_tokens=block, resume_token_ids=tuple(resume), signals=signals)


def drive(j: SegmentJob, script, entropies=None, step: int = 1, eos_finishes: bool = True,
          max_model_len: int = 4096):
    """Run ``j`` as a tier would over ``script`` (engine steps of ``step`` tokens); return the
    deltas and the result."""
    run = SegmentRun(j, j.prefix_token_ids, WordDecoder(), max_model_len=max_model_len, eos_token_ids=(EOS,))
    start = len(j.resume_token_ids)
    todo = [(t, entropies[start + i] if entropies else None) for i, t in enumerate(script[start:])]
    todo = todo[:run.max_engine_tokens] if not run.done else []
    deltas = []
    for k in range(0, len(todo), step):
        ended = False
        for token_id, entropy in todo[k:k + step]:
            if run.push(TokenOutput(token_id, logprob=-0.5, entropy=entropy, margin=0.25)):
                ended = True
                break
        if ended:
            break
        if k + step >= len(todo):  # the engine's own end: its EOS or its token limit
            run.engine_finished(eos=eos_finishes and todo[-1][0] == EOS)
            break
        delta = run.take_delta()
        if delta is not None:
            deltas.append(delta)
    return deltas, run.result()


def test_inclusive_stop_string_streams_everything_and_keeps_the_match():
    deltas, result = drive(job(StopRule(20, stop_strings=(" So",))), ids("a", " b", " So", " c"))
    assert result.finish_reason is FinishReason.STOP_STRING and result.text == "a b So"
    assert "".join(d.text for d in deltas) == "a b"  # the match ends the segment before a delta
    assert result.num_dropped_tokens == 0 and result.text_offsets == (1, 3, 6)


def test_exclusive_stop_string_never_streams_a_token_it_drops():
    rule = StopRule(20, stop_strings=("<call>",), string_commit=Commit.EXCLUSIVE)
    deltas, result = drive(job(rule), ids("a", " b", "<", "call", ">", "3"))
    assert result.text == "a b" and result.num_dropped_tokens == 3
    streamed = [t for d in deltas for t in d.token_ids]
    assert list(result.token_ids[:len(streamed)]) == streamed  # a prefix of what was kept


def test_retract_string_holds_back_from_its_first_occurrence():
    rule = StopRule(20, stop_strings=("call>",), retract_string=CALL_OPEN)
    run = SegmentRun(job(rule), (1,), WordDecoder(), max_model_len=100)
    for token_id in ids("a", " b", "<"):
        run.push(TokenOutput(token_id))
    assert run.stable_tokens() == 2  # "<" may begin "<call>"
    run.push(TokenOutput(ids("call")[0]))
    assert run.stable_tokens() == 2
    run2 = SegmentRun(job(rule), (1,), WordDecoder(), max_model_len=100)
    for token_id in ids("a", "<", " c"):  # "<" followed by " c" is not the start of "<call>"
        run2.push(TokenOutput(token_id))
    assert run2.stable_tokens() == 3


def test_exclusive_entropy_drops_the_trigger_which_is_never_streamed():
    rule = StopRule(20, entropy=EntropyRule(0.5, above=True, commit=Commit.EXCLUSIVE))
    script, ent = ids("a", " b", " c", " d"), [0.1, 0.2, 0.9, 0.1]
    deltas, result = drive(job(rule, signals=SignalRequest(entropy=True)), script, ent)
    assert result.finish_reason is FinishReason.ENTROPY and result.token_ids == tuple(ids("a", " b"))
    assert result.num_dropped_tokens == 1 and result.signals.entropy == (0.1, 0.2)
    assert [t for d in deltas for t in d.token_ids] == ids("a", " b")


def test_inclusive_entropy_below_keeps_the_trigger():
    rule = StopRule(20, entropy=EntropyRule(0.5, above=False, commit=Commit.INCLUSIVE))
    _, result = drive(job(rule), ids("a", " b", " c"), [0.9, 0.3, 0.1])
    assert result.token_ids == tuple(ids("a", " b")) and result.num_dropped_tokens == 0


def test_min_new_tokens_defers_rules_but_not_eos():
    rule = StopRule(20, min_new_tokens=3, stop_strings=("a",))
    _, result = drive(job(rule), ids("a", " b", "a", " c"))
    assert result.token_ids == tuple(ids("a", " b", "a"))  # the first "a" came too early
    _, result = drive(job(rule), [ids("a")[0], EOS, 3])
    assert result.finish_reason is FinishReason.EOS and result.token_ids == (ids("a")[0], EOS)


def test_engine_end_and_length_limits():
    _, result = drive(job(StopRule(3)), ids("a", " b", " c", " d"))
    assert result.finish_reason is FinishReason.LENGTH and len(result.token_ids) == 3
    # The context (max_model_len) caps what the engine is asked for: 3 prefix + 2 new.
    run = SegmentRun(job(StopRule(10)), (1, 1, 1), WordDecoder(), max_model_len=5)
    assert run.max_engine_tokens == 2
    full = SegmentRun(job(StopRule(10)), (1, 1, 1), WordDecoder(), max_model_len=3)
    assert full.done and full.result().finish_reason is FinishReason.LENGTH and full.result().token_ids == ()
    # The engine stops on its own (ignore_eos off, its own EOS).
    _, result = drive(job(StopRule(10)), ids("a", " b"), eos_finishes=False)
    assert result.finish_reason is FinishReason.LENGTH


def test_prefill_only_returns_no_tokens():
    j = SegmentJob("r", 0, StopRule(8), prefix_token_ids=(1, 2), prefill_only=True)
    run = SegmentRun(j, j.prefix_token_ids, WordDecoder(), max_model_len=100)
    assert run.max_engine_tokens == 1
    run.push(TokenOutput(3))
    run.engine_finished(eos=False)
    result = run.result()
    assert result.token_ids == () and result.num_dropped_tokens == 0 and result.num_prompt_tokens == 2


def test_deltas_every_interval_and_at_block_boundaries():
    deltas, _ = drive(job(StopRule(9), interval=4), ids("a", " b", " c", " d", "e", " x", "a", " b", " c"))
    assert [len(d.token_ids) for d in deltas] == [4, 4]
    # prefix of 3 tokens, blocks of 4: the 1st and 5th new tokens complete blocks.
    deltas, _ = drive(job(StopRule(9), interval=0, block=4), ids("a", " b", " c", " d", "e", " x", "a"))
    assert [len(d.token_ids) for d in deltas] == [1, 4]


def test_signals_cover_kept_tokens_and_top_logprobs_give_entropy_and_margin():
    sig = SignalRequest(logprob=True, entropy=True, margin=True)
    _, result = drive(job(StopRule(2), signals=sig), ids("a", " b", " c"), [0.3, 0.4, 0.5])
    assert result.signals.logprob == (-0.5, -0.5) and result.signals.margin == (0.25, 0.25)
    assert result.signals.entropy == (0.3, 0.4)
    out = TokenOutput.from_top_logprobs(5, -0.1, [math.log(0.5), math.log(0.5)], 4, True, True)
    assert out.entropy == pytest.approx(0.5) and out.margin == pytest.approx(0.0)
    assert TokenOutput.from_top_logprobs(5, None, [], 4, True, True).entropy is None


RULES = {
    "length": StopRule(12),
    "inclusive string": StopRule(12, min_new_tokens=2, stop_strings=(" So", ".")),
    "exclusive string": StopRule(12, stop_strings=("<call>", " d e"), string_commit=Commit.EXCLUSIVE),
    "retract": StopRule(12, stop_strings=("call>",), retract_string=CALL_OPEN),
    "entropy above": StopRule(12, entropy=EntropyRule(0.8, above=True, commit=Commit.EXCLUSIVE)),
    "entropy below": StopRule(12, min_new_tokens=3, entropy=EntropyRule(0.2, above=False)),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_streamed_tokens_are_always_a_prefix_of_the_result(name):
    rng = random.Random(name)
    for _ in range(200):
        script = [rng.randrange(1, len(VOCAB)) for _ in range(14)]
        entropies = [rng.random() for _ in script]
        deltas, result = drive(job(RULES[name], interval=rng.choice([1, 2, 3])), script, entropies,
                               step=rng.choice([1, 2]))
        streamed = [t for d in deltas for t in d.token_ids]
        assert list(result.token_ids[:len(streamed)]) == streamed
        assert result.text.startswith("".join(d.text for d in deltas))


@pytest.mark.parametrize("name", sorted(RULES))
def test_a_resumed_segment_ends_exactly_as_the_uninterrupted_one(name):
    """Migration: cut the stream after what was streamed, resume with those tokens."""
    rng = random.Random(f"resume {name}")
    sig = SignalRequest(entropy=True)
    for _ in range(200):
        script = [rng.randrange(1, len(VOCAB)) for _ in range(14)]
        entropies = [rng.random() for _ in script]
        interval = rng.choice([1, 2, 3])
        whole_deltas, whole = drive(job(RULES[name], interval, signals=sig), script, entropies)
        streamed = [t for d in whole_deltas for t in d.token_ids]
        cut = rng.randint(0, len(streamed))  # the tier died after sending `cut` tokens
        resumed_deltas, resumed = drive(job(RULES[name], interval, resume=streamed[:cut], signals=sig),
                                        script, entropies)
        assert (resumed.token_ids, resumed.text, resumed.finish_reason, resumed.num_dropped_tokens) == (
            whole.token_ids, whole.text, whole.finish_reason, whole.num_dropped_tokens)
        # Nothing streamed before the failure is streamed again; all of it stays a prefix.
        again = [t for d in resumed_deltas for t in d.token_ids]
        assert list(whole.token_ids[cut:cut + len(again)]) == again
        before = "".join(VOCAB[t] for t in streamed[:cut])
        assert whole.text.startswith(before + "".join(d.text for d in resumed_deltas))
        n = min(cut, len(resumed.token_ids))
        assert all(math.isnan(e) for e in resumed.signals.entropy[:n])
        assert resumed.signals.entropy[n:] == whole.signals.entropy[n:]
