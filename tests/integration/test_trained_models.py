"""The committed demo models load in vLLM (as tier servers) and relay real answers.

Accuracy itself is measured by ``relay-ray eval`` (docs/quality.md); here the large model
must solve a handful of test problems, the small model and the caller must load and answer,
and the caller's commands must hand spans to the large model. RelayLLM's handoff exactness runs
here too (on the same tier servers, started once): its served output must equal the same rules
run over one torch greedy loop of the two models (:func:`relay_ray.models.relay_sim.relayllm_relay`),
with real switches.
"""

from __future__ import annotations

import asyncio
import re
import statistics
from pathlib import Path

import pytest

from relay_ray.controller import RelayController, RelayResult
from relay_ray.transport.grpc_client import GrpcTierClient
from relay_ray.quality.extract import extract, parse_format
from relay_ray.tasks.splits import eval_splits
from relay_ray.types import CALL_OPEN, ChatMessage, PromptInput, RelayRequest, Tier

pytestmark = pytest.mark.integration
NUM_PROBLEMS = 6
DEMO_MODELS = Path(__file__).resolve().parents[2] / "demo-models"
CALLER_PROBLEMS, CALLER_NEW_TOKENS, MAX_CALLS = 6, 400, 32


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


def _relayllm_served(addresses: dict, prompts: list[str]) -> list:
    """(prompt ids as the large tier prepared them, RelayResult) per prompt, one by one."""
    async def go() -> list:
        tiers = {tier: GrpcTierClient([addr]) for tier, addr in addresses.items()}
        controller = RelayController(tiers)
        out = []
        for prompt in prompts:
            prompt_input = PromptInput(messages=(ChatMessage("user", prompt),))
            prepared = await tiers[Tier.LARGE].prepare(prompt_input)
            request = RelayRequest(prompt_input, "relayllm", {"max_calls": MAX_CALLS},
                                   max_new_tokens=CALLER_NEW_TOKENS)
            async for event in controller.generate(request):
                if isinstance(event, RelayResult):
                    out.append((prepared.token_ids, event))
        return out
    return asyncio.run(go())


def test_relayllm_switches_and_equals_its_rules_over_one_torch_greedy_loop(arith_servers):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relay_ray.models.relay_sim import relayllm_relay
    from relay_ray.models.sequences import encode_prompt

    problems = eval_splits()["test"][:CALLER_PROBLEMS]
    served = _relayllm_served(_caller_tiers(arith_servers), [p.prompt for p in problems])
    tokenizer = AutoTokenizer.from_pretrained(str(DEMO_MODELS / "arith-caller"))
    caller, large = (AutoModelForCausalLM.from_pretrained(str(DEMO_MODELS / name), dtype=torch.float32)
                     for name in ("arith-caller", "arith-large"))
    num_calls = []
    for problem, (prompt_ids, result) in zip(problems, served):
        assert list(prompt_ids) == encode_prompt(tokenizer, problem.prompt)
        expected = relayllm_relay(caller, large, tokenizer, list(prompt_ids), CALLER_NEW_TOKENS, MAX_CALLS)
        assert list(result.token_ids) == list(expected.token_ids), f"diverged on {problem.prompt!r}"
        assert result.text == tokenizer.decode(expected.token_ids, skip_special_tokens=True)
        assert result.stats.tokens_by_tier[Tier.LARGE] == expected.num_large_tokens
        assert result.stats.tokens_by_tier[Tier.SMALL] == expected.num_small_tokens
        assert CALL_OPEN not in result.text
        num_calls.append(expected.num_calls)
    switches = [r.stats.num_switches for _, r in served]
    print(f"relayllm: commands per request {num_calls}, switches {switches}")
    assert statistics.mean(switches) >= 2, f"the caller handed too little to the large tier: {switches}"
