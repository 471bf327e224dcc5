"""The only module that maps OpenAI API requests and answers to and from :mod:`relay_ray.types`.

Like :mod:`relay_ray.rpc.convert` for gRPC: a request becomes one
:class:`~relay_ray.types.RelayRequest` per prompt, validated later by the controller's own
``validate_request`` (the same code as gRPC); results become OpenAI objects with the
relay's figures as the ``relay`` extension.

Served model ids: ``relay`` (the server's default policy, any policy through
``relay.policy``), ``relay-<policy>`` for every policy that switches tiers, and the
single-tier baselines under their own names (``large-only``, ``small-only``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from relay_ray.controller.events import RelayResult
from relay_ray.policies import REGISTRY, make_policy
from relay_ray.rpc.openai_errors import bad_request, model_not_found
from relay_ray.rpc.openai_schema import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIRequest,
    RelayUsage,
    SegmentOut,
    Usage,
)
from relay_ray.types import (
    ChatMessage,
    FinishReason,
    PromptInput,
    RelayRequest,
    RelayStats,
    Sampling,
    SegmentRecord,
    Tier,
)

DEFAULT_MODEL = "relay"
Piece = tuple[tuple[int, Tier], str]  # text and the (segment index, tier) that wrote it
# OpenAI's documented default for /v1/completions; chat takes the gRPC API's default.
DEFAULT_COMPLETION_TOKENS = 16
DEFAULT_CHAT_TOKENS = 256
MAX_PROMPTS = 64  # prompts of one /v1/completions request (each becomes a relay request)
# OpenAI's role for system instructions in newer models; the relay's chat templates know "system".
_ROLE_ALIASES = {"developer": "system"}
# RelayRequest field -> request field, for errors (prefix match; see param_of).
_FIELD_TO_PARAM = {
    "sampling.temperature": "temperature", "sampling.top_p": "top_p", "sampling.top_k": "top_k",
    "sampling.seed": "seed", "policy.params": "relay.params", "policy": "relay.policy",
}


def model_id(policy: str) -> str:
    """The served model id of a registered policy."""
    return f"relay-{policy}" if REGISTRY[policy].switches_tiers else policy


def served_models(default_policy: str) -> dict[str, str]:
    """Model id -> policy name, ``relay`` first."""
    return {DEFAULT_MODEL: default_policy, **{model_id(name): name for name in REGISTRY}}


def policy_tiers(policy: str) -> tuple[Tier, ...]:
    """The tiers a policy's answers use."""
    cls = REGISTRY[policy]
    return (Tier.LARGE, Tier.SMALL) if cls.switches_tiers else (make_policy(policy).initial_tier(),)


def choose_policy(request: OpenAIRequest, default_policy: str) -> str:
    """The policy a request runs: by model id; ``relay.policy`` may refine ``relay``."""
    models = served_models(default_policy)
    if request.model not in models:
        raise model_not_found(request.model, list(models))
    named = request.relay.policy if request.relay else None
    if request.model == DEFAULT_MODEL:
        return named or default_policy
    policy = models[request.model]
    if named is not None and named != policy:
        raise bad_request("relay.policy", f"model {request.model!r} runs policy {policy!r}, not {named!r}; "
                                          f"use model {DEFAULT_MODEL!r} to pick any policy")
    return policy


def param_of(request: OpenAIRequest) -> Callable[[str], str]:
    """Maps a RelayRequest field named in a RelayInputError to the field the client sent."""
    chat = isinstance(request, ChatCompletionRequest)
    tokens = "max_completion_tokens" if chat and request.max_completion_tokens is not None else "max_tokens"

    def param(field: str) -> str:
        if field == "max_new_tokens":
            return tokens
        if field.startswith("prompt.messages"):
            return "messages" + field.removeprefix("prompt.messages")
        if field.startswith("prompt"):
            return "messages" if chat else "prompt"
        if field.startswith("policy.") and field != "policy.params":
            return "relay.params." + field.removeprefix("policy.")
        return _FIELD_TO_PARAM.get(field, field)

    return param


def _prompts(request: CompletionRequest | ChatCompletionRequest) -> list[PromptInput]:
    if isinstance(request, ChatCompletionRequest):
        messages = tuple(ChatMessage(_ROLE_ALIASES.get(m.role, m.role), m.text()) for m in request.messages)
        return [PromptInput(messages=messages)]
    prompt = request.prompt
    if isinstance(prompt, str):
        return [PromptInput(text=prompt)]
    if not prompt:
        raise bad_request("prompt", "the list of prompts is empty")
    if isinstance(prompt[0], int):
        return [PromptInput(token_ids=tuple(prompt))]
    if len(prompt) > MAX_PROMPTS:
        raise bad_request("prompt", f"{len(prompt)} prompts exceed the limit of {MAX_PROMPTS} per request")
    if isinstance(prompt[0], str):
        return [PromptInput(text=p) for p in prompt]
    for i, ids in enumerate(prompt):
        if not ids:
            raise bad_request(f"prompt[{i}]", "a token-id prompt is empty")
    return [PromptInput(token_ids=tuple(ids)) for ids in prompt]


def _max_new_tokens(request: CompletionRequest | ChatCompletionRequest) -> int:
    if isinstance(request, ChatCompletionRequest):
        for value in (request.max_completion_tokens, request.max_tokens):
            if value is not None:
                return value
        return DEFAULT_CHAT_TOKENS
    return DEFAULT_COMPLETION_TOKENS if request.max_tokens is None else request.max_tokens


def relay_requests(request: CompletionRequest | ChatCompletionRequest, default_policy: str) -> list[RelayRequest]:
    """One RelayRequest per prompt (request ids ``<id>-<index>`` for several).

    Raises :class:`OpenAIError` for what only this API can get wrong (unknown model,
    unsupported fields); the rest is the controller's ``validate_request``.
    """
    unsupported = request.unsupported()
    if unsupported:
        raise bad_request(unsupported[0], "is not supported by the relay (see docs/openai-api.md)")
    if request.stream_options is not None and not request.stream:
        raise bad_request("stream_options", "only allowed together with stream: true")
    stops = request.stop_strings()
    if len(stops) > 4 or any(not s for s in stops):
        raise bad_request("stop", "give at most 4 non-empty stop sequences")
    policy = choose_policy(request, default_policy)
    sampling = Sampling(
        temperature=1.0 if request.temperature is None else request.temperature,  # OpenAI's default
        top_p=1.0 if request.top_p is None else request.top_p,
        top_k=request.top_k or 0,
        seed=request.seed,
        ignore_eos=request.ignore_eos,
    )
    params = dict(request.relay.params) if request.relay else {}
    base_id = uuid.uuid4().hex
    prompts = _prompts(request)
    return [
        RelayRequest(prompt=prompt, policy=policy, policy_params=params, sampling=sampling,
                     max_new_tokens=_max_new_tokens(request),
                     request_id=base_id if len(prompts) == 1 else f"{base_id}-{i}")
        for i, prompt in enumerate(prompts)
    ]


# ---- answers -----------------------------------------------------------------------

STOP_SEQUENCE = "stop_sequence"  # the relay's finish reason name when a client's stop sequence cut the answer


def finish_reason_out(reason: FinishReason | str) -> str:
    """OpenAI's finish_reason: ``stop`` (end of answer, or a stop sequence) or ``length``."""
    if reason in (FinishReason.BUDGET, FinishReason.LENGTH, FinishReason.MAX_SEGMENTS):
        return "length"
    return "stop"


def relay_finish_name(reason: FinishReason | str) -> str:
    return reason if isinstance(reason, str) else reason.name.lower()


def segments_out(records: tuple[SegmentRecord, ...] | list[SegmentRecord]) -> list[SegmentOut]:
    return [
        SegmentOut(index=r.index, tier=r.tier.value, text=r.text, num_tokens=r.num_tokens,
                   finish_reason=relay_finish_name(r.finish_reason), num_dropped_tokens=r.num_dropped_tokens,
                   num_cached_tokens=r.num_cached_tokens)
        for r in records
    ]


def relay_usage(stats: RelayStats, finish: FinishReason | str) -> RelayUsage:
    return RelayUsage(
        large_tokens=stats.tokens_by_tier[Tier.LARGE], small_tokens=stats.tokens_by_tier[Tier.SMALL],
        large_generated_tokens=stats.generated_by_tier[Tier.LARGE],
        small_generated_tokens=stats.generated_by_tier[Tier.SMALL],
        num_switches=stats.num_switches, num_segments=stats.num_segments,
        large_token_share=stats.large_token_share, latency_ms=stats.latency_ms,
        finish_reason=relay_finish_name(finish), handoff_mode=stats.handoff_mode.value,
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """One prompt's answer as the edge returns it: possibly cut by a stop sequence."""

    text: str
    finish: FinishReason | str  # STOP_SEQUENCE when a stop sequence cut it
    prompt_tokens: int
    completion_tokens: int
    stats: RelayStats | None  # None when the relay was stopped before its end
    segments: list[SegmentOut]

    @classmethod
    def of(cls, result: RelayResult) -> Answer:
        prompt_tokens = result.segments[0].num_prompt_tokens if result.segments else 0
        return cls(result.text, result.stats.finish_reason, prompt_tokens, result.stats.num_tokens,
                   result.stats, segments_out(result.segments))


def cut_segments(pieces: list[Piece], records: list[SegmentRecord]) -> list[SegmentOut]:
    """Segments of an answer a stop sequence cut, from the text pieces sent (tagged with
    segment index and tier): a segment sent whole keeps its record's figures."""
    texts: dict[int, tuple[Tier, str]] = {}
    for (index, tier), text in pieces:
        texts[index] = (tier, texts.get(index, (tier, ""))[1] + text)
    by_index = {r.index: r for r in records}
    out = []
    for index, (tier, text) in texts.items():
        record = by_index.get(index)
        if record is not None and record.text == text:
            out.extend(segments_out([record]))
        else:
            out.append(SegmentOut(index=index, tier=tier.value, text=text, finish_reason=STOP_SEQUENCE))
    return out


def usage_of(answers: list[Answer]) -> Usage:
    """Usage of a request (summed over its prompts); ``relay`` figures for one prompt."""
    prompt = sum(a.prompt_tokens for a in answers)
    completion = sum(a.completion_tokens for a in answers)
    relay = None
    if len(answers) == 1 and answers[0].stats is not None:
        relay = relay_usage(answers[0].stats, answers[0].finish)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion, relay=relay)
