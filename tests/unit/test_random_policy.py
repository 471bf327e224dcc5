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


ANSWER = [2, 3, 4, 5] * 50 + [EOS]  # a ~200-token answer, as the arithmetic task's


@pytest.mark.parametrize("measured", [
    # what rstitch measured on dev (2.2% share, ~4 large segments of ~1.1 tokens, ~8 switches per answer)
    {"share": 0.022, "large_tokens": 4.4, "large_segments": 4.0, "switches": 7.9},
    # relaygen (78% share, ~7.8 large segments, ~15 switches)
    {"share": 0.78, "large_tokens": 157.0, "large_segments": 7.8, "switches": 14.6},
])
def test_structure_matched_router_matches_share_and_switches_of_short_answers(measured):
    """The eval's regime: ~200-token answers. Matched on share *and* segment length, the
    random router also makes about as many switches as the policy it stands in for (a
    router matched on share alone placed one large chunk per answer at 2%)."""
    from relay_ray.quality.runs import matched_params

    params = matched_params({"routing_seed": 0}, measured["share"], measured["large_tokens"],
                            measured["large_segments"])
    results = [relay(params, f"q{i}", doc=ANSWER) for i in range(200)]
    large = sum(r.stats.tokens_by_tier[Tier.LARGE] for r in results)
    total = sum(r.stats.num_tokens for r in results)
    switches = sum(r.stats.num_switches for r in results) / len(results)
    assert abs(large / total - measured["share"]) < 0.2 * measured["share"]
    assert abs(switches - measured["switches"]) < 0.25 * measured["switches"], switches
    # matched on share alone (default 4-token large segments), the structure is far off:
    # ~2.6 switches instead of ~8 at 2%, ~79 instead of ~15 at 78%
    share_only = [relay({"large_share": measured["share"]}, f"q{i}", doc=ANSWER) for i in range(50)]
    ratio = sum(r.stats.num_switches for r in share_only) / 50 / measured["switches"]
    assert not 0.5 < ratio < 2.0, ratio
