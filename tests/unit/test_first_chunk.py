"""A tier's first engine chunk (TierConfig.first_chunk_tokens): the engine's end at the chunk's
limit does not end the segment, and only segments an entropy rule may end are chunked."""

from __future__ import annotations

from types import SimpleNamespace

from relay_ray.config import TierConfig
from relay_ray.engines.segment_run import SegmentRun
from relay_ray.engines.vllm_tier import VllmTierEngine
from relay_ray.types import EntropyRule, SegmentJob, StopRule, Tier
from tests.unit.fakes import _WordDecoder

VOCAB = ["</s>", "Q: ", "a", " b"]


def _tier(first_chunk_tokens: int) -> VllmTierEngine:
    return VllmTierEngine(Tier.LARGE, TierConfig(model="unused", first_chunk_tokens=first_chunk_tokens))


def _job(stop: StopRule, prefill_only: bool = False) -> SegmentJob:
    return SegmentJob(request_id="r", segment_index=1, stop=stop, prefix_token_ids=(1, 2), prefill_only=prefill_only)


def _finished_output(token_id: int, reason: str):
    return SimpleNamespace(finished=True, outputs=[SimpleNamespace(token_ids=[token_id], logprobs=None,
                                                                   finish_reason=reason)])


ENTROPY = StopRule(max_new_tokens=32, entropy=EntropyRule(0.3, above=False))


def test_only_segments_an_entropy_rule_may_end_get_a_first_chunk():
    tier = _tier(1)
    assert tier._first_chunk(_job(ENTROPY)) == 1
    assert tier._first_chunk(_job(StopRule(max_new_tokens=32, stop_strings=("b",)))) == 0  # cue strings: long
    assert tier._first_chunk(_job(StopRule(max_new_tokens=32))) == 0  # fixed length: the engine knows the end
    assert tier._first_chunk(_job(ENTROPY, prefill_only=True)) == 0
    assert _tier(0)._first_chunk(_job(ENTROPY)) == 0  # off by default


def test_the_engine_ending_a_request_at_the_chunks_limit_does_not_end_the_segment():
    tier = _tier(1)
    job = _job(StopRule(max_new_tokens=32))  # no rule fires on these tokens
    run = SegmentRun(job, [1, 2], _WordDecoder(VOCAB), max_model_len=64, eos_token_ids=(0,))
    assert not tier._push_outputs(run, _finished_output(2, "length"), at_cap=True)
    assert not run.done and run.stopper.num_tokens == 1  # the token is kept; the caller continues
    # the segment's own end still ends it: EOS, or the length limit of an uncapped request
    assert tier._push_outputs(run, _finished_output(3, "length"), at_cap=False) and run.done
    eos_run = SegmentRun(job, [1, 2], _WordDecoder(VOCAB), max_model_len=64, eos_token_ids=(0,))
    assert tier._push_outputs(eos_run, _finished_output(0, "stop"), at_cap=True) and eos_run.done
