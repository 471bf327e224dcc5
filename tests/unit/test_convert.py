"""Protobuf <-> types conversion round trips and request checks."""

from __future__ import annotations

import pytest

from relay_ray.client import build_request
from relay_ray.errors import RelayInputError
from relay_ray.rpc import convert
from relay_ray.types import (
    ChatMessage, Commit, EntropyRule, FinishReason, Sampling, SegmentJob, SegmentResult, SegmentTiming,
    SignalRequest, StopRule, TokenSignals,
)
from relay_ray.v1 import relay_pb2 as rpb


def test_segment_job_round_trip():
    job = SegmentJob(
        request_id="r", segment_index=3,
        stop=StopRule(max_new_tokens=9, min_new_tokens=2, stop_strings=("So", "."), string_commit=Commit.EXCLUSIVE,
                      word_start=True, stop_token_ids=(7,), entropy=EntropyRule(0.25, True, Commit.EXCLUSIVE)),
        sampling=Sampling(temperature=0.5, top_p=0.9, top_k=5, seed=3), prefix_token_ids=(1, 2, 3),
        signals=SignalRequest(entropy=True), stream_interval_tokens=4,
    )
    assert convert.job_from_pb(convert.job_to_pb(job)) == job
    text_job = SegmentJob(request_id="r", segment_index=0, stop=StopRule(max_new_tokens=1), prefix_text="abc")
    assert convert.job_from_pb(convert.job_to_pb(text_job)) == text_job


def test_segment_result_round_trip():
    result = SegmentResult(
        token_ids=(5, 6), text="ab", finish_reason=FinishReason.ENTROPY, text_offsets=(1, 2), matched_stop="",
        num_dropped_tokens=1, num_prompt_tokens=10, num_cached_tokens=8,
        signals=TokenSignals(entropy=(0.25, 0.5)), timing=SegmentTiming(1.0, 2.0, 3.0, 6.0, 0.5, 1.25, 0.25), replica_id="x",
    )
    assert convert.update_from_pb(convert.update_to_pb(result)) == result


def test_request_with_typed_params_round_trips():
    msg = build_request([ChatMessage("user", "hi")], "relaygen", {"cues": ["So"], "min_tokens_after_return": 2},
                        Sampling(temperature=0.7, seed=1), max_new_tokens=33)
    req = convert.request_from_pb(msg, default_policy="rstitch")
    assert req.policy == "relaygen" and req.policy_params == {"cues": ("So",), "min_tokens_after_return": 2}
    assert req.max_new_tokens == 33 and req.sampling.seed == 1 and req.prompt.messages[0].content == "hi"


def test_unset_fields_take_defaults_and_empty_policy_takes_the_server_default():
    req = convert.request_from_pb(rpb.GenerateRequest(text="hi"), default_policy="rstitch")
    assert (req.policy, req.max_new_tokens, req.sampling) == ("rstitch", 256, Sampling())
    assert len(req.request_id) == 32  # generated, so streamed events can carry it


def test_params_of_another_policy_are_rejected():
    msg = rpb.GenerateRequest(text="hi", policy=rpb.PolicySpec(name="rstitch", relaygen=rpb.RelayGenParams()))
    with pytest.raises(RelayInputError) as info:
        convert.request_from_pb(msg, "relaygen")
    assert info.value.field == "policy.params"


def test_undecodable_frames_become_invalid_argument():
    from relay_ray.rpc.convert import request_from_pb
    from relay_ray.rpc.registration import _tolerant_request

    good = rpb.GenerateRequest(text="hi", request_id="r")
    assert _tolerant_request(good.SerializeToString()) == good
    with pytest.raises(RelayInputError) as err:
        request_from_pb(_tolerant_request(b"\xc5\xd7*\x1b"), "relaygen")
    assert err.value.field == "request"
