"""Handoff exactness: a relay loses nothing at a handoff, token for token (greedy).

- Both tiers serve the *same* model (the ``same`` app): every policy that keeps all the
  tokens it generates writes exactly what that model writes alone (large-only).
- RelayLLM removes its ``<call>n</call>`` commands, so "the model alone" is not its
  reference: its exactness test runs on the trained pair's tier servers
  (``test_trained_models.py``, which starts them once).
"""

from __future__ import annotations

import statistics
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from relay_ray.client import build_request
from relay_ray.v1 import common_pb2

pytestmark = pytest.mark.integration
NUM_PROMPTS, NEW_TOKENS = 20, 64
CONCURRENT_REQUESTS = 4
PROMPTS = [f"So we add {i} and {7 * i + 3}, so the sum is {8 * i + 3}. Now compute the product"
           for i in range(NUM_PROMPTS)]


@pytest.fixture(scope="module")
def baselines(same_client):
    """The model alone: one large-only segment per prompt."""
    out = []
    for prompt in PROMPTS:
        response = same_client.generate(build_request(prompt, "large-only", max_new_tokens=NEW_TOKENS))
        assert len(response.segments) == 1
        out.append(response)
    return out


def _frequent_texts(baselines, count: int) -> list[str]:
    """Token strings the model actually writes often: cues and ends that will fire."""
    words = Counter(w for b in baselines for w in b.text.split() if w.isascii() and w.isalpha() and len(w) > 1)
    return [w for w, _ in words.most_common(count)]


def _policies(baselines):
    common = _frequent_texts(baselines, 16)
    return {
        "fixed-ratio": {"large_tokens": 8, "small_tokens": 5},
        "relaygen": {"cues": common[0::2], "sentence_ends": common[1::2], "min_tokens_after_return": 1},
        "rstitch": {"tau": 0.33},
    }


def _generate_all(client, baselines, policy: str, params: dict) -> list:
    """Every prompt under ``policy``, four at a time (the engines batch them, as in service);
    each answer must equal the model alone, token for token."""
    def one(prompt: str):
        return client.generate(build_request(prompt, policy, params, max_new_tokens=NEW_TOKENS))

    with ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
        responses = list(pool.map(one, PROMPTS))
    for prompt, base, response in zip(PROMPTS, baselines, responses):
        assert list(response.token_ids) == list(base.token_ids), f"{policy} diverged on {prompt!r}"
        assert response.text == base.text
        assert len(response.token_ids) == NEW_TOKENS or response.stats.finish_reason == common_pb2.FINISH_REASON_EOS
    return responses


@pytest.mark.parametrize("policy", ["fixed-ratio", "relaygen", "rstitch"])
def test_every_switching_policy_reproduces_the_model_alone(same_client, baselines, policy):
    responses = _generate_all(same_client, baselines, policy, _policies(baselines)[policy])
    switches = [r.stats.num_switches for r in responses]
    print(f"{policy}: switches per request {statistics.mean(switches):.1f} (max {max(switches)})")
    assert statistics.mean(switches) >= 2, f"{policy} switched too rarely to test handoffs: {switches}"


def test_the_small_tier_alone_writes_what_the_large_tier_writes(same_client, baselines):
    """No handoff here: the small deployment (two replicas) serves the same model as the large one."""
    responses = _generate_all(same_client, baselines, "small-only", {})
    assert all(r.stats.num_switches == 0 and r.stats.large_tokens == 0 for r in responses)


def test_segments_of_a_request_stay_on_one_replica(same_client):
    replicas_seen = set()
    for i, prompt in enumerate(PROMPTS[:12]):
        response = same_client.generate(build_request(prompt, "fixed-ratio", {"large_tokens": 4, "small_tokens": 4},
                                                      max_new_tokens=40, request_id=f"affinity-{i}"))
        small = {s.replica_id for s in response.segments if s.tier == common_pb2.TIER_SMALL}
        assert len(small) == 1, f"request {i} used small replicas {small}"
        replicas_seen |= small
    assert len(replicas_seen) == 2, "requests should spread over both small replicas"
