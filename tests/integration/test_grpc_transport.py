"""The gRPC SegmentService transport against real tier servers: same answers as the
Serve-handle transport, replica failover, errors mapped to status codes."""

from __future__ import annotations

import asyncio

import pytest

from relay_ray.client import build_request
from relay_ray.controller import RelayController, RelayResult
from relay_ray.transport.grpc_client import GrpcTierClient
from relay_ray.errors import TierUnavailableError
from relay_ray.types import PromptInput, RelayRequest, Tier
from tests.integration.conftest import MODELS
from tests.integration.tier_servers import launch_tier, stop_tier, tier_pair, wait_listening

pytestmark = pytest.mark.integration
PROMPT = "So we add 12 and 30, so the sum is 42. Therefore"


@pytest.fixture(scope="module")
def tier_servers():
    """Large and small tier servers, and a small one with its own tokenizer, started side by side."""
    alt = launch_tier(MODELS / "demo-small-alt", "small", "1")
    try:
        with tier_pair(MODELS / "demo-large", MODELS / "demo-small") as addresses:
            yield addresses[Tier.LARGE], addresses[Tier.SMALL], wait_listening(alt, "demo-small-alt")
    finally:
        stop_tier(alt)


def _relay(tiers: dict, policy: str, params: dict) -> RelayResult:
    async def go():
        controller = RelayController(tiers)
        async for event in controller.generate(RelayRequest(PromptInput(text=PROMPT), policy, params, max_new_tokens=40)):
            if isinstance(event, RelayResult):
                return event
    return asyncio.run(go())


@pytest.mark.parametrize("policy,params", [("fixed-ratio", {"large_tokens": 6, "small_tokens": 4}),
                                           ("rstitch", {"tau": 0.34})])
def test_grpc_transport_matches_the_serve_transport(tier_servers, pair_client, policy, params):
    large_addr, small_addr, _ = tier_servers
    # A dead endpoint first in the list: jobs must fail over to the live one.
    tiers = {Tier.LARGE: GrpcTierClient([large_addr]), Tier.SMALL: GrpcTierClient([small_addr, "127.0.0.1:1"])}
    over_grpc = _relay(tiers, policy, params)
    over_serve = pair_client.generate(build_request(PROMPT, policy, params, max_new_tokens=40))
    assert list(over_grpc.token_ids) == list(over_serve.token_ids)
    assert [s.tier.value for s in over_grpc.segments] == [
        "large" if s.tier == 1 else "small" for s in over_serve.segments]
    assert over_grpc.stats.num_switches >= 1


def test_text_handoff_between_different_tokenizers(tier_servers):
    """A small tier with its own tokenizer: the prefix crosses as text and is re-tokenized."""
    large_addr, _, alt_addr = tier_servers
    tiers = {Tier.LARGE: GrpcTierClient([large_addr]), Tier.SMALL: GrpcTierClient([alt_addr])}
    result = _relay(tiers, "fixed-ratio", {"large_tokens": 6, "small_tokens": 4})
    assert result.stats.handoff_mode.value == "text" and result.token_ids == ()
    shape = [(s.tier, s.num_tokens) for s in result.segments[:4]]
    assert shape == [(Tier.LARGE, 6), (Tier.SMALL, 4), (Tier.LARGE, 6), (Tier.SMALL, 4)]
    assert result.text == "".join(s.text for s in result.segments)
    # each tier continued the text the other wrote: its prompt grew by what came before
    assert result.segments[2].num_prompt_tokens > result.segments[0].num_prompt_tokens


def test_unreachable_tier_is_reported(tier_servers):
    large_addr, _, _ = tier_servers
    tiers = {Tier.LARGE: GrpcTierClient([large_addr]), Tier.SMALL: GrpcTierClient(["127.0.0.1:1"], timeout_s=5)}
    with pytest.raises(TierUnavailableError):
        _relay(tiers, "small-only", {})
