"""The served application over real gRPC: answers, streaming, reflection, bad input."""

from __future__ import annotations

import grpc
import pytest

from relay_ray.client import build_request
from relay_ray.types import ChatMessage, Sampling
from relay_ray.v1 import common_pb2
from relay_ray.v1 import relay_pb2 as rpb

pytestmark = pytest.mark.integration
LARGE, SMALL = common_pb2.TIER_LARGE, common_pb2.TIER_SMALL


def test_chat_prompt_through_the_relay(pair_client):
    msg = build_request([ChatMessage("user", "What is 12 plus 30?")], "fixed-ratio",
                        {"large_tokens": 6, "small_tokens": 4}, max_new_tokens=30)
    response = pair_client.generate(msg)
    assert response.stats.large_tokens + response.stats.small_tokens == len(response.token_ids) <= 30
    assert [s.tier for s in response.segments][:3] == [LARGE, SMALL, LARGE]
    assert "".join(s.text for s in response.segments) == response.text
    assert response.stats.handoff_mode == "token_ids"


def test_stream_deltas_segments_and_final(pair_client):
    msg = build_request("So we add 12 and 30.", "fixed-ratio", {"large_tokens": 12, "small_tokens": 12},
                        max_new_tokens=48)
    events = list(pair_client.generate_stream(msg))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "final" and "delta" in kinds and kinds.count("segment_end") == len(events[-1].final.segments)
    final = events[-1].final
    assert final.request_id and all(e.request_id == final.request_id for e in events)
    assert "".join(e.segment_end.text for e in events if e.WhichOneof("event") == "segment_end") == final.text
    deltas = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
    assert deltas == final.text  # fixed-ratio drops nothing, so the deltas are final


def test_reflection_lists_relay_service(relay_server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(relay_server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in answer.list_services_response.service}
    assert "relay_ray.v1.RelayService" in names


BAD_REQUESTS = [
    (rpb.GenerateRequest(text=""), "prompt"),
    (rpb.GenerateRequest(text="x " * 5000), "prompt"),
    (build_request("hi", "nope", validate=False), "unknown policy"),
    (build_request("hi", "rstitch", {"tau": 1.5}, validate=False), "policy.tau"),
    (build_request("hi", "rstitch", sampling=Sampling(temperature=-1.0)), "sampling.temperature"),
    (build_request("hi", "rstitch", sampling=Sampling(top_p=1.5)), "sampling.top_p"),
    (build_request("hi", "rstitch", sampling=Sampling(top_p=0.0)), "sampling.top_p"),
    (build_request("hi", "rstitch", max_new_tokens=0), "max_new_tokens"),
    (build_request("hi", "rstitch", max_new_tokens=100000), "max_new_tokens"),
    (build_request([ChatMessage("wizard", "hi")], "rstitch"), "role"),
    (rpb.GenerateRequest(text="hi", policy=rpb.PolicySpec(name="rstitch", relaygen=rpb.RelayGenParams())),
     "policy.params"),
]


@pytest.mark.parametrize("msg,field", BAD_REQUESTS, ids=[f for _, f in BAD_REQUESTS])
def test_bad_input_gets_invalid_argument_and_the_server_keeps_serving(pair_client, msg, field):
    with pytest.raises(grpc.RpcError) as info:
        pair_client.generate(msg)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        list(pair_client.generate_stream(msg))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in info.value.details()
    ok = pair_client.generate(build_request("So we add 1 and 2.", "small-only", max_new_tokens=4))
    assert len(ok.token_ids) == 4
