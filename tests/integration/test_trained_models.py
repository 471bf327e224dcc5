"""The committed demo models load in vLLM (as tier servers) and relay real answers.

Accuracy itself is measured by ``relay-ray eval`` (docs/quality.md); here the large model
must solve a handful of test problems, the small model and the caller must load and answer,
and the caller's commands must hand spans to the large model.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from relay_ray.controller import RelayController, RelayResult
from relay_ray.transport.grpc_client import GrpcTierClient
from relay_ray.quality.extract import extract, parse_format
from relay_ray.tasks.splits import eval_splits
from relay_ray.types import ChatMessage, PromptInput, RelayRequest, Tier

pytestmark = pytest.mark.integration
NUM_PROBLEMS = 6


def _relay(addresses: dict[Tier, str], prompts: list[str], policy: str,
           params: dict | None = None) -> list[RelayResult]:
    """Relay ``prompts`` one after another; the gRPC clients live in this call's event loop."""
    async def go() -> list[RelayResult]:
        controller = RelayController({tier: GrpcTierClient([addr]) for tier, addr in addresses.items()})
        results = []
        for prompt in prompts:
            request = RelayRequest(PromptInput(messages=(ChatMessage("user", prompt),)), policy, params or {},
                                   max_new_tokens=400)
            async for event in controller.generate(request):
                if isinstance(event, RelayResult):
                    results.append(event)
        return results
    return asyncio.run(go())


def _caller_tiers(servers: dict[str, str]) -> dict[Tier, str]:
    return {Tier.LARGE: servers["large"], Tier.SMALL: servers["caller"]}


def test_large_model_solves_test_problems(arith_servers):
    fmt = parse_format("answer-line")
    problems = eval_splits()["test"][:NUM_PROBLEMS]
    results = _relay(_caller_tiers(arith_servers), [p.prompt for p in problems], "large-only")
    answers = [extract(r.text, fmt) for r in results]
    right = sum(a == str(p.answer) for a, p in zip(answers, problems))
    assert right >= NUM_PROBLEMS - 1, f"large-only answered {answers}, expected {[p.answer for p in problems]}"


def test_caller_hands_spans_to_the_large_model(arith_servers):
    problem = eval_splits()["test"][0]
    (result,) = _relay(_caller_tiers(arith_servers), [problem.prompt], "relayllm", {"max_calls": 32})
    assert result.stats.tokens_by_tier[Tier.LARGE] > 0, "the caller never called"
    assert "<call>" not in result.text and "Answer:" in result.text
    assert result.stats.large_token_share < 0.5


def test_small_model_loads_and_answers(arith_servers):
    addr = arith_servers["small"]
    (result,) = _relay({Tier.LARGE: addr, Tier.SMALL: addr}, [eval_splits()["test"][1].prompt], "small-only")
    assert "</think>" in result.text and re.search(r"Answer: \d+", result.text)
