"""The seeded `random` router: reaches its target large share, reproducibly, through the controller."""

from __future__ import annotations

import asyncio

import pytest

from relay_ray.controller import RelayController
from relay_ray.errors import RelayInputError
from relay_ray.policies import REGISTRY, make_policy
from relay_ray.policies.random_share import RandomSharePolicy
from relay_ray.types import FinishReason, PromptInput, RelayRequest, Tier
from tests.unit.fakes import EOS, ScriptedTier

VOCAB = ["</s>", "Q: ", "a", " b", " c", " d"]
DOC = [2, 3, 4, 5] * 100 + [EOS]


def relay(params: dict, request_id: str, doc=DOC):
    large = ScriptedTier(Tier.LARGE, VOCAB, doc)
    small = ScriptedTier(Tier.SMALL, VOCAB, doc)
    controller = RelayController({Tier.LARGE: large, Tier.SMALL: small})

    async def go():
        events = [ev async for ev in controller.generate(
            RelayRequest(PromptInput(text="Q: "), "random", params, max_new_tokens=1000, request_id=request_id))]
        return events[-1]
    return asyncio.run(go())


def test_registered_under_random():
    assert REGISTRY["random"] is RandomSharePolicy


@pytest.mark.parametrize("share", [0.15, 0.35, 0.7, 0.865])
def test_large_share_matches_the_target_on_average(share):
    results = [relay({"large_share": share, "routing_seed": 1}, f"r{i}") for i in range(30)]
    large = sum(r.stats.tokens_by_tier[Tier.LARGE] for r in results)
    total = sum(r.stats.num_tokens for r in results)
    assert all(list(r.token_ids) == DOC for r in results)  # routing never changes the text here
    assert abs(large / total - share) < 0.05
    assert sum(r.stats.num_switches for r in results) > 30


def test_same_request_id_and_seed_route_identically():
    a = relay({"large_share": 0.4, "routing_seed": 3}, "same")
    b = relay({"large_share": 0.4, "routing_seed": 3}, "same")
    c = relay({"large_share": 0.4, "routing_seed": 4}, "same")
    lengths = lambda r: [(s.tier, s.num_tokens) for s in r.segments]  # noqa: E731
    assert lengths(a) == lengths(b)
    assert lengths(a) != lengths(c)


@pytest.mark.parametrize("share,tier", [(0.0, Tier.SMALL), (1.0, Tier.LARGE)])
def test_extreme_shares_use_one_tier(share, tier):
    result = relay({"large_share": share}, "x")
    assert {s.tier for s in result.segments} == {tier}
    assert result.stats.finish_reason is FinishReason.EOS


def test_mean_segment_lengths_give_the_target_share():
    policy = make_policy("random", {"large_share": 0.25, "mean_large_tokens": 6})
    assert policy.mean_tokens(Tier.LARGE) == 6
    assert policy.mean_tokens(Tier.SMALL) == pytest.approx(18)
    # A segment has >= 1 token: at a high share the large segments stretch instead.
    policy = make_policy("random", {"large_share": 0.9, "mean_large_tokens": 4})
    assert policy.mean_tokens(Tier.SMALL) == 1.0 and policy.mean_tokens(Tier.LARGE) == pytest.approx(9.0)


@pytest.mark.parametrize("params,field", [
    ({"large_share": 1.5}, "policy.large_share"), ({"mean_large_tokens": 0.5}, "policy.mean_large_tokens"),
    ({"routing_seed": -1}, "policy.routing_seed"), ({"share": 0.3}, "policy.share"),
])
def test_bad_parameters_are_named(params, field):
    with pytest.raises(RelayInputError) as info:
        make_policy("random", params)
    assert info.value.field == field
