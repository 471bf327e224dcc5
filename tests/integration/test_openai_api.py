"""The OpenAI-compatible HTTP API of the served application, through the official ``openai``
SDK: the same answers and figures as gRPC, streaming, prompt forms, every error status and
the SDK's retries, and 200 concurrent streams."""

from __future__ import annotations

import asyncio
import time

import httpx2
import openai
import pytest

from relay_ray.client import build_request
from relay_ray.types import ChatMessage
from tests.integration.conftest import EDGE_ONGOING, EDGE_QUEUED, EDGE_TOKEN, EDGE_TOKEN_2

pytestmark = pytest.mark.integration
PROMPT = "So we add 12 and 30, so the sum is 42. Therefore"
QUESTION = "What is 12 plus 30?"
MAX_TOKENS = 40
# 0.38 mixes both tiers on the demo pair (first hit of this search); the others in case the models change.
RSTITCH_TAUS = (0.38, 0.3, 0.32, 0.34, 0.36, 0.28, 0.25, 0.4)


def sdk(relay_server, app: str, max_retries: int = 0, attempts: list | None = None,
        api_key: str = "unused") -> openai.OpenAI:
    """An SDK client of application ``app``; ``attempts`` collects (status, headers) of every HTTP answer."""
    hooks = {"response": [lambda r: attempts.append((r.status_code, dict(r.headers)))]} if attempts is not None else {}
    return openai.OpenAI(base_url=f"{relay_server.http_url}/{app}/v1", api_key=api_key, max_retries=max_retries,
                         timeout=300, http_client=httpx2.Client(event_hooks=hooks, timeout=300))


@pytest.fixture(scope="module")
def client(relay_server):
    with sdk(relay_server, "pair") as c:
        yield c


@pytest.fixture(scope="module")
def rstitch_tau(pair_client) -> float:
    """A threshold at which R-Stitch really hands over on this pair (both tiers write)."""
    for tau in RSTITCH_TAUS:
        stats = pair_client.generate(build_request(PROMPT, "rstitch", {"tau": tau}, max_new_tokens=MAX_TOKENS)).stats
        if stats.large_tokens and stats.small_tokens and stats.num_switches >= 2:
            return tau
    pytest.fail("no tau in the grid mixed both tiers")


def test_models_lists_the_policies_and_their_tier_models(client):
    models = {m.id: m for m in client.models.list().data}
    assert {"relay", "relay-rstitch", "relay-relaygen", "relay-relayllm", "relay-fixed-ratio",
            "large-only", "small-only"} <= set(models)
    assert models["relay-rstitch"].relay["tiers"] == {"large": "demo-large", "small": "demo-small"}
    assert models["large-only"].relay["tiers"] == {"large": "demo-large", "small": None}
    assert models["relay"].relay["default"] and models["relay"].relay["policy"] == "relaygen"


def _policies(tau: float) -> list[tuple[str, str, dict]]:
    return [("relay-fixed-ratio", "fixed-ratio", {"large_tokens": 6, "small_tokens": 4}),
            ("relay-rstitch", "rstitch", {"tau": tau}), ("relay-relaygen", "relaygen", {}),
            ("relay-relayllm", "relayllm", {})]


def _check_usage(usage, stats) -> None:
    """usage (and its relay figures) equal the gRPC answer's statistics."""
    assert usage.completion_tokens == stats.large_tokens + stats.small_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens and usage.prompt_tokens > 0
    relay = usage.relay
    assert (relay["large_tokens"], relay["small_tokens"], relay["num_switches"], relay["num_segments"]) == (
        stats.large_tokens, stats.small_tokens, stats.num_switches, stats.num_segments)
    assert (relay["large_generated_tokens"], relay["small_generated_tokens"]) == (
        stats.large_generated_tokens, stats.small_generated_tokens)


def _streamed(stream, chat: bool) -> tuple[str, list, object]:
    """(concatenated deltas, finish reasons, usage) of a streamed answer."""
    text, finishes, usage = "", [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += (choice.delta.content or "") if chat else choice.text
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    return text, finishes, usage


@pytest.mark.parametrize("index", range(4), ids=["fixed-ratio", "rstitch", "relaygen", "relayllm"])
def test_completion_unary_stream_and_token_ids_match_grpc(client, pair_client, rstitch_tau, tokenizer, index):
    model, policy, params = _policies(rstitch_tau)[index]
    grpc = pair_client.generate(build_request(PROMPT, policy, params, max_new_tokens=MAX_TOKENS))
    kwargs = dict(model=model, max_tokens=MAX_TOKENS, temperature=0, extra_body={"relay": {"params": params}})
    unary = client.completions.create(prompt=PROMPT, **kwargs)
    assert unary.choices[0].text == grpc.text
    _check_usage(unary.usage, grpc.stats)
    text, finishes, usage = _streamed(client.completions.create(
        prompt=PROMPT, stream=True, stream_options={"include_usage": True}, **kwargs), chat=False)
    assert text == unary.choices[0].text, "the concatenated deltas differ from the final text"
    assert finishes == [unary.choices[0].finish_reason]
    _check_usage(usage, grpc.stats)
    ids = client.completions.create(prompt=tokenizer.encode(PROMPT), **kwargs)
    assert ids.choices[0].text == grpc.text and ids.usage.prompt_tokens == unary.usage.prompt_tokens


@pytest.mark.parametrize("index", range(4), ids=["fixed-ratio", "rstitch", "relaygen", "relayllm"])
def test_chat_unary_and_stream_match_grpc(client, pair_client, rstitch_tau, index):
    model, policy, params = _policies(rstitch_tau)[index]
    grpc = pair_client.generate(build_request([ChatMessage("user", QUESTION)], policy, params,
                                              max_new_tokens=MAX_TOKENS))
    kwargs = dict(model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=MAX_TOKENS,
                  temperature=0, extra_body={"relay": {"params": params, "segments": True}})
    unary = client.chat.completions.create(**kwargs)
    assert unary.choices[0].message.content == grpc.text
    assert [s["text"] for s in unary.choices[0].relay["segments"]] == [s.text for s in grpc.segments]
    _check_usage(unary.usage, grpc.stats)
    text, finishes, usage = _streamed(client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **kwargs), chat=True)
    assert text == grpc.text, "the concatenated deltas differ from the final text"
    _check_usage(usage, grpc.stats)


def test_stop_sequence_cuts_the_answer(client, pair_client):
    grpc = pair_client.generate(build_request(PROMPT, "large-only", max_new_tokens=MAX_TOKENS))
    stop = grpc.text[len(grpc.text) // 2:][:3]  # a sequence from the middle of the answer
    cut = grpc.text[:grpc.text.index(stop)]
    kwargs = dict(model="large-only", prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0, stop=[stop])
    unary = client.completions.create(**kwargs)
    assert (unary.choices[0].text, unary.choices[0].finish_reason) == (cut, "stop")
    assert 0 < unary.usage.completion_tokens < grpc.stats.large_tokens
    text, finishes, _ = _streamed(client.completions.create(stream=True, **kwargs), chat=False)
    assert (text, finishes) == (cut, ["stop"])


def test_the_demo_curl_line_reaches_the_app(relay_server):
    import dataclasses
    import json
    import shlex
    import subprocess

    from relay_ray.cli.demo import curl_line
    from relay_ray.serve.local import load_serve_file
    from tests.integration.conftest import ROOT

    local = load_serve_file(ROOT / "cluster/serve-local.yaml")
    port = int(relay_server.http_url.rsplit(":", 1)[1])
    raw = {**local.raw, "http_options": {"port": port}, "applications": [{**local.raw["applications"][0],
                                                                          "route_prefix": "/pair"}]}
    line = curl_line(dataclasses.replace(local, raw=raw), "rstitch", 8)
    answer = json.loads(subprocess.run([*shlex.split(line), "-s"], capture_output=True, check=True,
                                       timeout=120).stdout)
    assert answer["model"] == "relay-rstitch" and answer["usage"]["completion_tokens"] <= 8
    assert answer["choices"][0]["message"]["content"]


def test_bad_requests_are_400_with_the_field(client):
    chat = [{"role": "user", "content": "hi"}]
    cases = [
        (dict(model="relay-rstitch", extra_body={"relay": {"params": {"tau": 2.0}}}), "relay.params.tau"),
        (dict(model="relay", extra_body={"relay": {"policy": "nope"}}), "relay.policy"),
        (dict(model="relay-rstitch", max_tokens=100_000), "max_tokens"),
        (dict(model="relay-rstitch", n=3), "n"),
    ]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(messages=chat, **kwargs)
        assert info.value.param == param and info.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as info:  # the tier checks token ids against its vocabulary
        client.completions.create(model="relay", prompt=[1, 2, 10**6])
    assert info.value.param == "prompt"
    assert client.completions.create(model="small-only", prompt="So", max_tokens=2).usage.completion_tokens == 2


def test_unknown_model_is_404_and_not_retried(relay_server):
    attempts: list = []
    with sdk(relay_server, "pair", max_retries=2, attempts=attempts) as c:
        with pytest.raises(openai.NotFoundError) as info:
            c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found" and [a[0] for a in attempts] == [404]


def test_deadline_is_504_and_not_retried(relay_server):
    attempts: list = []
    with sdk(relay_server, "pair", max_retries=2, attempts=attempts) as c:
        started = time.perf_counter()
        with pytest.raises(openai.InternalServerError) as info:
            c.completions.create(model="large-only", prompt=PROMPT, max_tokens=400,
                                 extra_body={"ignore_eos": True, "relay": {"timeout_s": 0.3}})
        elapsed_s = time.perf_counter() - started
    assert info.value.status_code == 504 and info.value.code == "deadline_exceeded"
    assert [a[0] for a in attempts] == [504] and attempts[0][1]["x-should-retry"] == "false"
    assert elapsed_s < 2.0


def test_overload_is_429_with_retry_after_and_the_sdk_retries_it(relay_server):
    """``edge`` admits EDGE_ONGOING + EDGE_QUEUED requests; more concurrent ones are refused
    by Serve's proxy with 429 + Retry-After (its HTTP admission gate, rpc/http_admission.py,
    before routing; Serve's backpressure, the builder's backpressure_config, after); with
    retries the SDK gets every answer."""
    body = dict(model="small-only", prompt=PROMPT, max_tokens=96, extra_body={"ignore_eos": True})
    admitted = EDGE_ONGOING + EDGE_QUEUED
    with sdk(relay_server, "edge", api_key=EDGE_TOKEN) as c:  # a request starts the gate's refresh of the limits
        c.models.list()
    time.sleep(1.5)  # the gate re-reads the limits at most once a second

    def burst(max_retries: int, n: int) -> tuple[list, list]:
        attempts: list = []

        async def record(response):
            attempts.append((response.status_code, dict(response.headers)))

        async def run_all():
            http = httpx2.AsyncClient(event_hooks={"response": [record]}, timeout=300)
            async with openai.AsyncOpenAI(base_url=f"{relay_server.http_url}/edge/v1", api_key=EDGE_TOKEN,
                                          max_retries=max_retries, http_client=http) as c:
                return await asyncio.gather(*(c.completions.create(**body) for _ in range(n)),
                                            return_exceptions=True)

        return asyncio.run(run_all()), attempts

    results, attempts = burst(max_retries=0, n=3 * admitted)
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(refused) >= admitted and all(r.response.headers["retry-after"] == "1" for r in refused)
    # the gate answered (its OpenAI error body; Serve's own refusal is plain text)
    assert any(r.code == "rate_limit_exceeded" for r in refused), [r.response.text for r in refused]
    assert all(isinstance(r, openai.RateLimitError) or r.usage.completion_tokens == 96 for r in results), results
    results, attempts = burst(max_retries=8, n=2 * admitted)
    assert all(not isinstance(r, Exception) for r in results), results
    assert 429 in [a[0] for a in attempts]  # some attempts were refused, then retried


def test_unavailable_tiers_are_503_and_retried(relay_server, down_app):
    attempts: list = []
    with sdk(relay_server, down_app.strip("/"), max_retries=1, attempts=attempts) as c:
        with pytest.raises(openai.InternalServerError) as info:
            c.chat.completions.create(model="relay", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503 and info.value.code == "service_unavailable"
    assert [a[0] for a in attempts] == [503, 503] and attempts[0][1]["retry-after"] == "1"


def test_missing_or_wrong_token_is_401_and_not_retried(relay_server):
    """``edge`` requires a bearer token (the SDK's api_key), like its RelayService."""
    for key in ("unused", EDGE_TOKEN + "x"):
        attempts: list = []
        with sdk(relay_server, "edge", max_retries=2, attempts=attempts, api_key=key) as c:
            with pytest.raises(openai.AuthenticationError):
                c.models.list()
        assert [a[0] for a in attempts] == [401]
    for key in (EDGE_TOKEN, EDGE_TOKEN_2):  # both tokens of the rotation file
        with sdk(relay_server, "edge", api_key=key) as c:
            answer = c.completions.create(model="small-only", prompt="So", max_tokens=2, extra_body={"ignore_eos": True})
            assert answer.usage.completion_tokens == 2


def test_200_concurrent_streaming_chats_lose_nothing(relay_server):
    """200 streams at once through the SDK: no failure, and every stream's deltas
    concatenate to its final text (the segments the last chunk reports; relaygen is left
    out as its budget fallback appends text outside any segment; rstitch's many short
    segments would make this test minutes long on 2 cores: its streams are checked above)."""
    num_streams = 200
    policies = [("relay-fixed-ratio", {"large_tokens": 4, "small_tokens": 4}), ("relay-relayllm", {})]

    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, str]:
        model, params = policies[i % len(policies)]
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"{QUESTION} ({i % 7})"}], max_tokens=12,
            temperature=0, stream=True, extra_body={"relay": {"params": params, "segments": True}})
        text, final = "", None
        async for chunk in stream:
            choice = chunk.choices[0]
            text += choice.delta.content or ""
            if choice.finish_reason:
                final = "".join(s["text"] for s in choice.relay["segments"])
        return text, final

    async def run_all():
        http = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=num_streams), timeout=300)
        async with openai.AsyncOpenAI(base_url=f"{relay_server.http_url}/pair/v1", api_key="unused",
                                      max_retries=0, http_client=http) as client:
            return await asyncio.gather(*(one(client, i) for i in range(num_streams)), return_exceptions=True)

    started = time.perf_counter()
    results = asyncio.run(run_all())
    elapsed_s = time.perf_counter() - started
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {num_streams} failed, e.g. {failures[0]!r}"
    lost = [i for i, (text, final) in enumerate(results) if text != final]
    assert not lost, f"{len(lost)} streams' deltas differ from their final text"
    assert all(text for text, _ in results)
    print(f"\n{num_streams} concurrent streaming chats in {elapsed_s:.1f} s, 0 failures, 0 lost deltas")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from tests.integration.conftest import MODELS

    return AutoTokenizer.from_pretrained(MODELS / "demo-large")
