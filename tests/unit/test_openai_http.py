"""The OpenAI HTTP edge through the official ``openai`` SDK, in process (ASGI), over a real
RelayController and scripted tiers: conversion, streaming, stop sequences, error statuses
and the SDK's retries. The served app is tested in tests/integration/test_openai_api.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import openai
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from relay_ray.controller import RelayController, RelayResult
from relay_ray.errors import RelayInputError
from relay_ray.rpc import openai_errors
from relay_ray.rpc.openai_http import OpenAIEdge
from relay_ray.rpc.openai_run import StopScanner
from relay_ray.types import PreparedPrompt, PromptInput, RelayRequest, Sampling, Tier
from tests.unit.fakes import EOS, ScriptedTier

VOCAB = ["</s>", "Q: ", "a", " b", " So", ",", " c", ".", " d", "\n", "</think>"]
W = {w: i for i, w in enumerate(VOCAB)}
DOC = [W[w] for w in ("a", " b", " c", " d", "a", " So", ",", " c", " d", ".", " b", " b", " c", " So", " b",
                      ".", " d")] + [EOS]
TEXT = "".join(VOCAB[t] for t in DOC if t != EOS)
ENTROPIES = [0.9 if i % 3 == 0 else 0.1 for i in range(len(DOC))]


class EdgeTier(ScriptedTier):
    """A scripted tier whose prompts are token ids, chat messages or text (one prompt
    token "Q: " positions the document; longer text is only tokenized, for counting).
    Chat prompts open a ``<think>`` block."""

    def __init__(self, tier: Tier, delay_s: float = 0.0, fail_with: BaseException | None = None,
                 fail_at_segment: int = 0) -> None:
        super().__init__(tier, VOCAB, DOC, ENTROPIES)
        self.delay_s, self.fail_with, self.fail_at_segment = delay_s, fail_with, fail_at_segment

    async def prepare(self, prompt: PromptInput) -> PreparedPrompt:
        if prompt.token_ids:
            if max(prompt.token_ids) >= len(VOCAB):
                raise RelayInputError("prompt.token_ids", "out of the vocabulary")
            return PreparedPrompt(prompt.token_ids, "".join(VOCAB[i] for i in prompt.token_ids))
        if prompt.messages:  # a chat template that opens the reasoning block
            return PreparedPrompt((W["Q: "],), "Q: <think>")
        return PreparedPrompt(tuple(self.encode(prompt.text)), prompt.text)

    async def stream_segment(self, job) -> AsyncIterator:
        if self.fail_with is not None and job.segment_index >= self.fail_at_segment:
            raise self.fail_with
        await asyncio.sleep(self.delay_s)
        async for item in super().stream_segment(job):
            yield item


def make_client(large: EdgeTier | None = None, small: EdgeTier | None = None, max_retries: int = 0,
                authenticator=None, attempts: list | None = None) -> tuple[openai.AsyncOpenAI, RelayController]:
    controller = RelayController({Tier.LARGE: large or EdgeTier(Tier.LARGE), Tier.SMALL: small or EdgeTier(Tier.SMALL)})
    edge = OpenAIEdge(controller, "rstitch", authenticator)
    app = Starlette(routes=[Route("/{path:path}", edge.handle, methods=["GET", "POST", "PUT"])])

    async def record(response):
        if attempts is not None:
            attempts.append((response.status_code, dict(response.headers)))

    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://relay",
                              event_hooks={"response": [record]})
    client = openai.AsyncOpenAI(base_url="http://relay/v1", api_key="unused", http_client=http,
                                max_retries=max_retries)
    return client, controller


def run(coro):
    return asyncio.run(coro)


async def relay_text(controller: RelayController, policy: str, max_new_tokens: int = 64) -> RelayResult:
    request = RelayRequest(PromptInput(text="Q: "), policy, max_new_tokens=max_new_tokens)
    async for event in controller.generate(request):
        if isinstance(event, RelayResult):
            return event
    raise AssertionError("no result")


def test_models_lists_every_policy_with_its_tiers():
    async def go():
        client, _ = make_client()
        models = {m.id: m for m in (await client.models.list()).data}
        assert {"relay", "relay-rstitch", "relay-relaygen", "relay-relayllm", "large-only", "small-only"} <= set(models)
        assert models["relay"].relay == {"policy": "rstitch", "default": True,
                                         "tiers": {"large": "scripted", "small": "scripted"}}
        assert models["small-only"].relay["tiers"] == {"large": None, "small": "scripted"}
        assert (await client.models.retrieve("relay-relaygen")).relay["policy"] == "relaygen"

    run(go())


@pytest.mark.parametrize("model,policy", [("relay-rstitch", "rstitch"), ("relay-fixed-ratio", "fixed-ratio"),
                                          ("large-only", "large-only")])
def test_chat_unary_and_stream_match_the_controller(model, policy):
    async def go():
        client, controller = make_client()
        expected = await relay_text(controller, policy)
        messages = [{"role": "user", "content": "hi"}]
        unary = await client.chat.completions.create(model=model, messages=messages, max_tokens=64, temperature=0)
        assert unary.choices[0].message.content == expected.text == TEXT
        assert unary.choices[0].finish_reason == "stop"  # EOS
        assert unary.usage.completion_tokens == expected.stats.num_tokens
        assert unary.usage.prompt_tokens == 1 and unary.usage.total_tokens == 1 + expected.stats.num_tokens
        assert unary.usage.relay["num_switches"] == expected.stats.num_switches
        stream = await client.chat.completions.create(model=model, messages=messages, max_tokens=64,
                                                      temperature=0, stream=True,
                                                      stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        usage = chunks[-1].usage
        assert chunks[-1].choices == [] and (usage.prompt_tokens, usage.completion_tokens) == (1, expected.stats.num_tokens)
        assert usage.relay["large_tokens"] == unary.usage.relay["large_tokens"] == expected.stats.tokens_by_tier[
            Tier.LARGE]

    run(go())


def test_text_no_model_wrote_is_streamed_too():
    async def go():  # relaygen closes the open <think> block when the budget runs out
        client, _ = make_client()
        kwargs = dict(model="relay-relaygen", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
        unary = await client.chat.completions.create(**kwargs)
        assert unary.choices[0].message.content == "a b c da\n</think>"
        stream = await client.chat.completions.create(stream=True, **kwargs)
        assert "".join([c.choices[0].delta.content or "" async for c in stream]) == unary.choices[0].message.content

    run(go())


def test_completion_prompt_forms_and_budget():
    async def go():
        client, _ = make_client()
        text = await client.completions.create(model="relay-rstitch", prompt="Q: ", max_tokens=5, temperature=0)
        ids = await client.completions.create(model="relay-rstitch", prompt=[W["Q: "]], max_tokens=5, temperature=0)
        assert text.choices[0].text == ids.choices[0].text == "a b c da"
        assert text.choices[0].finish_reason == "length" and text.usage.completion_tokens == 5
        both = await client.completions.create(model="relay-rstitch", prompt=["Q: ", "Q: "], max_tokens=5)
        assert [c.index for c in both.choices] == [0, 1] and both.usage.completion_tokens == 10
        assert both.choices[0].text == text.choices[0].text
        many = await client.completions.create(model="small-only", prompt=[[W["Q: "]], [W["Q: "]]], max_tokens=3,
                                               stream=True)
        pieces: dict[int, str] = {}
        async for chunk in many:
            for choice in chunk.choices:
                pieces[choice.index] = pieces.get(choice.index, "") + choice.text
        assert pieces == {0: "a b c", 1: "a b c"}
        default = await client.completions.create(model="relay", prompt="Q: ")
        assert default.usage.completion_tokens == 16  # OpenAI's default max_tokens

    run(go())


def test_segments_on_request_attribute_the_text_to_tiers():
    async def go():
        client, controller = make_client()
        body = {"relay": {"params": {"large_tokens": 3, "small_tokens": 2}, "segments": True}}
        unary = await client.completions.create(model="relay-fixed-ratio", prompt="Q: ", max_tokens=64,
                                                extra_body=body)
        segments = unary.choices[0].relay["segments"]
        assert [s["tier"] for s in segments][:3] == ["large", "small", "large"]
        assert "".join(s["text"] for s in segments) == unary.choices[0].text == TEXT
        stream = await client.completions.create(model="relay-fixed-ratio", prompt="Q: ", max_tokens=64,
                                                 extra_body=body, stream=True)
        tagged = [(c.choices[0].relay, c.choices[0].text) async for c in stream if c.choices[0].text]
        assert [r["tier"] for r, _ in tagged][:3] == ["large", "small", "large"]
        plain = await client.completions.create(model="relay-fixed-ratio", prompt="Q: ", max_tokens=8)
        assert getattr(plain.choices[0], "relay", None) is None

    run(go())


def test_stop_sequences_cut_unary_and_stream_alike():
    async def go():
        client, _ = make_client()
        for stop in (" So", [".", " So"]):
            unary = await client.completions.create(model="large-only", prompt="Q: ", max_tokens=64, stop=stop)
            assert unary.choices[0].text == "a b c da"
            assert unary.choices[0].finish_reason == "stop" and getattr(unary.usage, "relay", None) is None
            assert unary.usage.completion_tokens == 5 and unary.usage.prompt_tokens == 1
            stream = await client.completions.create(model="large-only", prompt="Q: ", max_tokens=64, stop=stop,
                                                     stream=True)
            assert "".join([c.choices[0].text async for c in stream]) == "a b c da"

    run(go())


def test_stop_scanner_holds_back_only_possible_starts_and_keeps_tags():
    scanner = StopScanner(("STOP",))
    assert scanner.push("a", "xxST") == [("a", "x")]  # "xST" could still start "STOP"
    assert scanner.push("b", "OP and more") == [("a", "x")] and scanner.matched
    assert scanner.push("c", "late") == [] and scanner.flush() == []
    scanner = StopScanner(("<end>", "!"))
    out = scanner.push("a", "one <e") + scanner.push("b", "nd? no") + scanner.flush()
    assert out == [("a", "on"), ("a", "e <e"), ("b", "nd"), ("b", "? no")] and not scanner.matched
    assert StopScanner(()).push("a", "text") == [("a", "text")]


def test_policy_params_and_input_are_validated_like_grpc():
    async def go():
        client, _ = make_client()
        cases = [
            (dict(model="relay-rstitch", extra_body={"relay": {"params": {"tau": 2.0}}}), "relay.params.tau"),
            (dict(model="relay-rstitch", extra_body={"relay": {"params": {"bogus": 1}}}), "relay.params.bogus"),
            (dict(model="relay-rstitch", extra_body={"relay": {"policy": "relaygen"}}), "relay.policy"),
            (dict(model="relay", extra_body={"relay": {"policy": "nope"}}), "relay.policy"),
            (dict(model="relay-rstitch", max_tokens=0), "max_tokens"),
            (dict(model="relay-rstitch", max_completion_tokens=100000), "max_completion_tokens"),
            (dict(model="relay-rstitch", temperature=-1), "temperature"),
            (dict(model="relay-rstitch", top_p=0), "top_p"),
            (dict(model="relay-rstitch", n=2), "n"),
            (dict(model="relay-rstitch", logprobs=True), "logprobs"),
            (dict(model="relay-rstitch", tools=[{"type": "function", "function": {"name": "f"}}]), "tools"),
            (dict(model="relay-rstitch", stop=["a", "b", "c", "d", "e"]), "stop"),
            (dict(model="relay-rstitch", stream_options={"include_usage": True}), "stream_options"),
            (dict(model="relay-rstitch", messages=[{"role": "wizard", "content": "hi"}]), "messages[0].role"),
            (dict(model="relay-rstitch", messages=[]), "messages"),
        ]
        for kwargs, param in cases:
            kwargs.setdefault("messages", [{"role": "user", "content": "hi"}])
            with pytest.raises(openai.BadRequestError) as info:
                await client.chat.completions.create(**kwargs)
            assert info.value.status_code == 400 and info.value.param == param, (kwargs, info.value.body)
            assert info.value.type == "invalid_request_error"
        for prompt, param in (([], "prompt"), ([[1], []], "prompt[1]"), ([99], "prompt"), ("", "prompt")):
            with pytest.raises(openai.BadRequestError) as info:
                await client.completions.create(model="relay", prompt=prompt)
            assert info.value.param == param, info.value.body

    run(go())


def test_unknown_model_unknown_route_and_bad_json():
    async def go():
        attempts: list = []
        client, _ = make_client(max_retries=2, attempts=attempts)
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert info.value.code == "model_not_found" and "relay-rstitch" in info.value.message
        assert [a[0] for a in attempts] == [404]  # not retried
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("gpt-4o")
        raw = client._client  # the httpx2 client
        assert (await raw.get("/v1/nothing")).status_code == 404
        assert (await raw.get("/v1/completions")).status_code == 405
        bad = await raw.post("/v1/completions", content=b"{not json")
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"

    run(go())


def test_missing_or_wrong_token_is_401_and_the_sdk_does_not_retry(monkeypatch):
    from relay_ray.rpc.auth import TokenAuthenticator

    monkeypatch.setenv("RELAY_TEST_TOKENS", "right,rotated")
    authenticator = TokenAuthenticator(tokens_env="RELAY_TEST_TOKENS")

    async def go():
        attempts: list = []
        client, _ = make_client(authenticator=authenticator, max_retries=2, attempts=attempts)
        for key in ("unused", "rightish"):
            with pytest.raises(openai.AuthenticationError) as info:
                await client.with_options(api_key=key).chat.completions.create(
                    model="relay", messages=[{"role": "user", "content": "hi"}])
            assert info.value.code == "invalid_api_key"
        raw = client._client
        assert (await raw.get("/v1/models")).status_code == 401  # no authorization header at all
        assert [a[0] for a in attempts] == [401, 401, 401]  # never retried
        for key in ("right", "rotated"):  # the SDK's api_key is the bearer token
            assert (await client.with_options(api_key=key).models.list()).data

    run(go())


def test_overload_is_429_with_retry_after_and_the_sdk_retries_it():
    from ray.serve.exceptions import BackPressureError

    async def go():
        attempts: list = []
        large = EdgeTier(Tier.LARGE, fail_with=BackPressureError(num_queued_requests=4, max_queued_requests=4))
        client, _ = make_client(large=large, max_retries=1, attempts=attempts)
        with pytest.raises(openai.RateLimitError) as info:
            await client.completions.create(model="large-only", prompt="Q: ")
        assert info.value.code == "rate_limit_exceeded"
        assert [a[0] for a in attempts] == [429, 429] and attempts[0][1]["retry-after"] == "1"

    run(go())


def test_unavailable_tier_is_503_retried_and_deadline_is_504_not_retried():
    async def go():
        attempts: list = []
        small = EdgeTier(Tier.SMALL, fail_with=ConnectionError("replica gone"))
        client, _ = make_client(small=small, max_retries=1, attempts=attempts)
        with pytest.raises(openai.InternalServerError) as info:
            await client.completions.create(model="small-only", prompt="Q: ")
        assert info.value.status_code == 503 and "replica gone" not in info.value.message
        assert [a[0] for a in attempts] == [503, 503]
        attempts.clear()
        slow = EdgeTier(Tier.LARGE, delay_s=5.0)
        client, _ = make_client(large=slow, max_retries=2, attempts=attempts)
        with pytest.raises(openai.InternalServerError) as info:
            await client.completions.create(model="large-only", prompt="Q: ", extra_body={"relay": {"timeout_s": 0.1}})
        assert info.value.status_code == 504 and info.value.code == "deadline_exceeded"
        assert [a[0] for a in attempts] == [504] and attempts[0][1]["x-should-retry"] == "false"
        with pytest.raises(openai.InternalServerError) as info:  # still before the first chunk: a status
            await client.completions.create(model="relay-fixed-ratio", prompt="Q: ", max_tokens=64, stream=True,
                                            extra_body={"relay": {"timeout_s": 0.1}})
        assert info.value.status_code == 504

    run(go())


def test_a_failure_mid_stream_ends_with_an_error_event():
    async def go():
        large = EdgeTier(Tier.LARGE, fail_with=ConnectionError("gone"), fail_at_segment=2)
        client, _ = make_client(large=large)
        stream = await client.completions.create(model="relay-fixed-ratio", prompt="Q: ", max_tokens=64, stream=True,
                                                 extra_body={"relay": {"params": {"large_tokens": 2, "small_tokens": 2}}})
        received = []
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                received.append(chunk.choices[0].text)
        assert "".join(received) == "a b c d" and "unavailable" in info.value.message

    run(go())


def test_seed_and_sampling_reach_the_relay_request():
    from relay_ray.rpc import openai_convert as oc
    from relay_ray.rpc.openai_schema import ChatCompletionRequest

    req = ChatCompletionRequest.model_validate({
        "model": "relay", "messages": [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                                       {"role": "user", "content": "hi"}],
        "temperature": 0.5, "top_p": 0.9, "seed": 7, "max_completion_tokens": 12, "user": "u1",
        "relay": {"policy": "relaygen", "params": {"cues": ["So"]}}, "metadata": {"ignored": True}})
    (request,) = oc.relay_requests(req, "rstitch")
    assert request.policy == "relaygen" and request.policy_params == {"cues": ["So"]}
    assert request.sampling == Sampling(temperature=0.5, top_p=0.9, seed=7) and request.max_new_tokens == 12
    assert [(m.role, m.content) for m in request.prompt.messages] == [("system", "be brief"), ("user", "hi")]


def test_demo_prints_a_curl_line_for_the_served_config():
    import json
    import shlex

    from relay_ray.cli.demo import curl_line
    from relay_ray.serve.local import load_serve_file

    root = Path(__file__).resolve().parents[2]
    line = curl_line(load_serve_file(root / "cluster/serve-local.yaml"), "rstitch", 64)
    args = shlex.split(line)
    assert args[:2] == ["curl", "http://127.0.0.1:8000/v1/chat/completions"]
    body = json.loads(args[args.index("-d") + 1])
    assert body["model"] == "relay-rstitch" and body["relay"] == {"params": {"tau": 0.12}}


def test_input_errors_of_other_processes_are_400():
    import pickle

    from ray.exceptions import RayTaskError

    error = pickle.loads(pickle.dumps(RelayInputError("prompt.token_ids", "out of the vocabulary")))
    assert (error.field, error.message) == ("prompt.token_ids", "out of the vocabulary")
    wrapped = RayTaskError("prepare", "traceback", error)  # as a Serve handle raises it
    answer = openai_errors.error_for(wrapped, lambda field: "prompt")
    assert (answer.status, answer.param) == (400, "prompt")
    assert openai_errors.error_for(RayTaskError("f", "tb", ConnectionError("x")), str).status == 503
