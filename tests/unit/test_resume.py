"""Controller failover: a stream broken at any event resumes on another controller (same
application secret) with nothing lost or repeated, through the protobuf messages clients see."""

from __future__ import annotations

import asyncio
import random

import pytest

from relay_ray.client import StreamProgress, build_request
from relay_ray.controller import ControllerLimits, RelayController
from relay_ray.controller.resume import ResumeCodec
from relay_ray.errors import RelayInputError
from relay_ray.rpc.convert import event_to_pb, request_from_pb, resume_from_pb
from relay_ray.types import Tier
from tests.unit.fakes import ScriptedTier
from tests.unit.test_controller_loop import CALL_DOC, DOC, ENTROPY, VOCAB, ids

SECRET = b"s" * 32
POLICIES = [
    ("fixed-ratio", {"large_tokens": 3, "small_tokens": 2}, DOC),
    ("rstitch", {"tau": 0.5}, DOC),
    ("relaygen", {"cues": [" So"], "sentence_ends": ["."], "min_tokens_after_return": 0}, DOC),
    ("relayllm", {"max_calls": 4}, CALL_DOC),
    ("random", {"large_share": 0.3, "mean_large_tokens": 2}, DOC),
]


def new_controller(doc, policy: str, secret: bytes = SECRET) -> RelayController:
    large_doc = ids(*[" d"] * len(doc)) if policy == "relayllm" else doc
    tiers = {Tier.LARGE: ScriptedTier(Tier.LARGE, VOCAB, large_doc, ENTROPY),
             Tier.SMALL: ScriptedTier(Tier.SMALL, VOCAB, doc, ENTROPY)}
    return RelayController(tiers, ControllerLimits(stream_interval_tokens=1), resume_codec=ResumeCodec(secret))


def stream(controller: RelayController, msg, stop_after: int | None = None) -> list:
    """The pb messages a client receives (all, or the first ``stop_after``)."""
    async def go():
        out = []
        request = request_from_pb(msg, "relaygen")
        async for event in controller.generate(request, stream_text=True, resume=resume_from_pb(msg)):
            out.append(event_to_pb(request.request_id, event))
            if stop_after is not None and len(out) >= stop_after:
                break
        return out
    return asyncio.run(go())


def text_of(events) -> str:
    return "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")


@pytest.mark.parametrize("policy,params,doc", POLICIES)
def test_a_stream_broken_anywhere_resumes_exactly(policy, params, doc):
    msg = build_request("Q: ", policy, params, max_new_tokens=64, request_id="req-1")
    whole = stream(new_controller(doc, policy), msg)
    final = whole[-1].final
    rng = random.Random(policy)
    for cut in sorted(rng.sample(range(1, len(whole)), min(12, len(whole) - 1))):
        progress = StreamProgress(msg)
        before = stream(new_controller(doc, policy), msg, stop_after=cut)  # the replica died here
        for event in before:
            progress.observe(event)
        after = stream(new_controller(doc, policy), progress.resume_request())  # another replica
        assert text_of(before) + text_of(after) == final.text, cut
        resumed = after[-1].final
        assert resumed.text == final.text and list(resumed.token_ids) == list(final.token_ids)
        s, r = final.stats, resumed.stats
        assert (r.large_tokens, r.small_tokens, r.num_switches, r.num_segments) == (
            s.large_tokens, s.small_tokens, s.num_switches, s.num_segments)
        ends = [e.segment_end.index for e in before + after if e.WhichOneof("event") == "segment_end"]
        assert ends == list(range(len(final.segments)))  # every segment reported once


def test_tokens_are_checked():
    msg = build_request("Q: ", "fixed-ratio", {"large_tokens": 3, "small_tokens": 2}, max_new_tokens=64,
                        request_id="req-2")
    events = stream(new_controller(DOC, "fixed-ratio"), msg, stop_after=6)
    progress = StreamProgress(msg)
    for event in events:
        progress.observe(event)
    assert progress.token
    good = progress.resume_request()

    def fails(resume_msg, field: str, controller=None):
        with pytest.raises(RelayInputError) as err:
            stream(controller or new_controller(DOC, "fixed-ratio"), resume_msg)
        assert err.value.field == field

    forged = type(good)()
    forged.CopyFrom(good)
    forged.resume.token = good.resume.token[:-4] + b"AAAA"
    fails(forged, "resume.token")
    fails(good, "resume.token", new_controller(DOC, "fixed-ratio", secret=b"t" * 32))  # another application
    other = type(good)()
    other.CopyFrom(good)
    other.request_id = "req-3"
    fails(other, "resume.token")  # bound to its request
    edited = type(good)()
    edited.CopyFrom(good)
    edited.resume.output_text = edited.resume.output_text + "x"
    fails(edited, "resume.output")
    no_token = type(good)()
    no_token.CopyFrom(good)
    no_token.resume.token = b""
    with pytest.raises(RelayInputError):
        resume_from_pb(no_token)  # committed output without its token
