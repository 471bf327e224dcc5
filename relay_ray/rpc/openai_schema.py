"""Pydantic models of the OpenAI-compatible HTTP API (requests and responses).

Only the wire format lives here; :mod:`relay_ray.rpc.openai_convert` maps it to and from
the relay's domain types. Request models ignore fields they do not know (clients send many
optional fields), but every field the relay cannot honour is declared so that a request
setting it gets a clear 400 instead of being silently served differently
(:meth:`OpenAIRequest.unsupported`). Response models omit the ``relay`` extension and
``usage`` when they are ``None``; every standard field is always present.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_serializer

# ---- requests ----------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class RelayOptions(BaseModel):
    """The ``relay`` extension of a request body (``extra_body={"relay": {...}}`` in the SDK)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str | None = Field(None, description="policy name; must match the model's unless model is 'relay'")
    params: dict[str, Any] = Field(default_factory=dict, description="the policy's parameters, as in gRPC")
    segments: bool = Field(False, description="return per-tier segments (and tag streamed deltas by tier)")
    timeout_s: float | None = Field(None, gt=0, le=86_400, description="deadline of the request; 504 after it")


class StreamOptions(_Lenient):
    include_usage: bool = False


class OpenAIRequest(_Lenient):
    """Fields shared by completions and chat completions."""

    model: StrictStr
    max_tokens: StrictInt | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: StrictInt | None = None  # vLLM's extension
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    n: StrictInt | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    ignore_eos: bool = False  # vLLM's extension (benchmarks)
    relay: RelayOptions | None = None
    # Declared only to be refused when set (see unsupported()).
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def unsupported(self) -> list[str]:
        """Names of fields set to values the relay does not support."""
        bad = []
        if self.n not in (None, 1):
            bad.append("n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                bad.append(name)
        if self.logit_bias:
            bad.append("logit_bias")
        return bad


class CompletionRequest(OpenAIRequest):
    """``POST /v1/completions``: ``prompt`` in each form the API defines."""

    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    echo: bool = False
    suffix: StrictStr | None = None
    best_of: StrictInt | None = None
    logprobs: StrictInt | None = None

    def unsupported(self) -> list[str]:
        bad = super().unsupported()
        if self.echo:
            bad.append("echo")
        if self.suffix:
            bad.append("suffix")
        if self.best_of not in (None, 1):
            bad.append("best_of")
        if self.logprobs is not None:
            bad.append("logprobs")
        return bad


class TextPart(_Lenient):
    type: Literal["text"]
    text: StrictStr


class ChatMessageIn(_Lenient):
    role: StrictStr
    content: StrictStr | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(OpenAIRequest):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessageIn] = Field(..., min_length=1)
    max_completion_tokens: StrictInt | None = None
    logprobs: bool | None = None
    top_logprobs: StrictInt | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> list[str]:
        bad = super().unsupported()
        if self.logprobs or self.top_logprobs:
            bad.append("logprobs")
        for name in ("tools", "functions"):
            if getattr(self, name):
                bad.append(name)
        for name in ("tool_choice", "function_call"):
            if getattr(self, name) not in (None, "none"):
                bad.append(name)
        if self.response_format and self.response_format.get("type", "text") != "text":
            bad.append("response_format")
        return bad


# ---- responses ---------------------------------------------------------------------


class _Out(BaseModel):
    """A response object; the fields named in ``omit_if_none`` are left out when None."""

    model_config = ConfigDict(frozen=True)
    omit_if_none: ClassVar[tuple[str, ...]] = ("relay", "usage")

    @model_serializer(mode="wrap")
    def _omit(self, handler):
        data = handler(self)
        for name in self.omit_if_none:
            if data.get(name, 0) is None:
                del data[name]
        return data


class RelayUsage(_Out):
    """The relay's own figures of one answer (``usage.relay``)."""

    large_tokens: int
    small_tokens: int
    large_generated_tokens: int  # including tokens generated and then not kept
    small_generated_tokens: int
    num_switches: int
    num_segments: int
    large_token_share: float
    latency_ms: float
    finish_reason: str  # the relay's own reason: eos, budget, max_segments, stop_sequence
    handoff_mode: str


class Usage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    relay: RelayUsage | None = None


class SegmentOut(_Out):
    """One segment of an answer: which tier wrote which text. The counts are None for the
    segment a stop sequence cut (the relay was stopped inside it)."""

    index: int
    tier: Literal["large", "small"]
    text: str
    finish_reason: str
    num_tokens: int | None = None
    num_dropped_tokens: int | None = None
    num_cached_tokens: int | None = None


class RelayChoiceInfo(_Out):
    """``relay`` of a choice (only when the request asked for segments)."""

    omit_if_none: ClassVar[tuple[str, ...]] = ("tier", "segment_index", "segments")

    tier: Literal["large", "small"] | None = None  # stream chunks: the tier that wrote this delta
    segment_index: int | None = None
    segments: list[SegmentOut] | None = None  # unary answers and the last chunk of a choice


FinishReasonOut = Literal["stop", "length"]


class _Choice(_Out):
    index: int
    logprobs: None = None
    relay: RelayChoiceInfo | None = None


class _Answer(_Out):
    """Fields of every completion object (unary or chunk)."""

    id: str
    created: int
    model: str
    system_fingerprint: str | None = None
    usage: Usage | None = None


class CompletionChoice(_Choice):
    text: str
    finish_reason: FinishReasonOut | None = None


class Completion(_Answer):
    """A completion, or one chunk of a streamed completion."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class AssistantMessage(_Out):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Choice):
    message: AssistantMessage
    finish_reason: FinishReasonOut


class ChatCompletion(_Answer):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


class ChatDelta(_Out):
    omit_if_none: ClassVar[tuple[str, ...]] = ("role", "content")

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Choice):
    delta: ChatDelta
    finish_reason: FinishReasonOut | None = None


class ChatCompletionChunk(_Answer):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]


class ModelTiers(_Out):
    large: str | None = None
    small: str | None = None


class ModelRelayInfo(_Out):
    policy: str
    default: bool
    tiers: ModelTiers


class ModelCard(_Out):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "relay_ray"
    relay: ModelRelayInfo


class ModelList(_Out):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(_Out):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Out):
    error: ErrorBody
