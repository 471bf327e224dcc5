"""Bad requests are rejected before any tier is called, naming the field."""

from __future__ import annotations

import pytest

from relay_ray.controller import ControllerLimits, check_prompt_fits, validate_request
from relay_ray.controller.limits import InputLimits, check_job
from relay_ray.errors import RelayInputError
from relay_ray.types import (
    ChatMessage, KvSession, PreparedPrompt, PromptInput, RelayRequest, Sampling, SegmentJob, StopRule, Tier, TierInfo,
)

OK = RelayRequest(PromptInput(text="hi"), "rstitch")


@pytest.mark.parametrize("request_,field", [
    (RelayRequest(PromptInput(text="  "), "rstitch"), "prompt"),
    (RelayRequest(PromptInput(), "rstitch"), "prompt"),
    (RelayRequest(PromptInput(text="hi"), "nope"), "policy"),
    (RelayRequest(PromptInput(text="hi"), "rstitch", {"tau": 1.5}), "policy.tau"),
    (RelayRequest(PromptInput(text="hi"), "rstitch", {"tau": -0.1}), "policy.tau"),
    (RelayRequest(PromptInput(text="hi"), "rstitch", {"bogus": 1}), "policy.bogus"),
    (RelayRequest(PromptInput(text="hi"), "fixed-ratio", {"large_tokens": 0}), "policy.large_tokens"),
    (RelayRequest(PromptInput(text="hi"), "relaygen", {"cues": []}), "policy.cues"),
    (RelayRequest(PromptInput(text="hi"), "rstitch", sampling=Sampling(temperature=-1)), "sampling.temperature"),
    (RelayRequest(PromptInput(text="hi"), "rstitch", sampling=Sampling(top_p=0)), "sampling.top_p"),
    (RelayRequest(PromptInput(text="hi"), "rstitch", sampling=Sampling(top_p=1.5)), "sampling.top_p"),
    (RelayRequest(PromptInput(text="hi"), "rstitch", sampling=Sampling(top_k=-2)), "sampling.top_k"),
    (RelayRequest(PromptInput(text="hi"), "rstitch", max_new_tokens=0), "max_new_tokens"),
    (RelayRequest(PromptInput(text="hi"), "rstitch", max_new_tokens=10**6), "max_new_tokens"),
    (RelayRequest(PromptInput(messages=(ChatMessage("robot", "hi"),)), "rstitch"), "prompt.messages[0].role"),
])
def test_each_bad_field_is_named(request_, field):
    with pytest.raises(RelayInputError) as info:
        validate_request(request_, ControllerLimits())
    assert info.value.field == field


def test_valid_request_yields_its_policy():
    assert validate_request(OK, ControllerLimits()).name == "rstitch"


def test_prompt_must_fit_the_smaller_context():
    infos = {t: TierInfo(t, "m", "f", 100, ctx, (0,)) for t, ctx in ((Tier.LARGE, 100), (Tier.SMALL, 50))}
    with pytest.raises(RelayInputError) as info:
        check_prompt_fits(PreparedPrompt(tuple(range(60)), ""), 10, infos)
    assert info.value.field == "prompt"
    with pytest.raises(RelayInputError) as info:
        check_prompt_fits(PreparedPrompt(tuple(range(30)), ""), 30, infos)
    assert info.value.field == "max_new_tokens" and "at most 20" in info.value.message


def test_a_tier_refuses_a_job_without_prefix_but_not_a_session_end():
    # The controller's KV-session END names only the request (a tier that refused it kept the
    # session, its vLLM slot and KV blocks until the idle TTL).
    info = TierInfo(Tier.LARGE, "m", "f", 100, 64, (0,))
    check_job(SegmentJob("r", 0, StopRule(max_new_tokens=1), kv_session=KvSession.END), info, InputLimits())
    with pytest.raises(RelayInputError) as refused:
        check_job(SegmentJob("r", 0, StopRule(max_new_tokens=1), kv_session=KvSession.KEEP), info, InputLimits())
    assert refused.value.field == "segment.prefix_token_ids"
