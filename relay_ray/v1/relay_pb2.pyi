from relay_ray.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ChatPrompt(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...

class LargeOnlyParams(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SmallOnlyParams(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FixedRatioParams(_message.Message):
    __slots__ = ("large_tokens", "small_tokens", "first")
    LARGE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SMALL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FIRST_FIELD_NUMBER: _ClassVar[int]
    large_tokens: int
    small_tokens: int
    first: _common_pb2.Tier
    def __init__(self, large_tokens: _Optional[int] = ..., small_tokens: _Optional[int] = ..., first: _Optional[_Union[_common_pb2.Tier, str]] = ...) -> None: ...

class RelayGenParams(_message.Message):
    __slots__ = ("cues", "sentence_ends", "min_tokens_after_return", "small_writes_answer", "cue_word_start", "offload_sentences")
    CUES_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_ENDS_FIELD_NUMBER: _ClassVar[int]
    MIN_TOKENS_AFTER_RETURN_FIELD_NUMBER: _ClassVar[int]
    SMALL_WRITES_ANSWER_FIELD_NUMBER: _ClassVar[int]
    CUE_WORD_START_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_SENTENCES_FIELD_NUMBER: _ClassVar[int]
    cues: _containers.RepeatedScalarFieldContainer[str]
    sentence_ends: _containers.RepeatedScalarFieldContainer[str]
    min_tokens_after_return: int
    small_writes_answer: bool
    cue_word_start: bool
    offload_sentences: bool
    def __init__(self, cues: _Optional[_Iterable[str]] = ..., sentence_ends: _Optional[_Iterable[str]] = ..., min_tokens_after_return: _Optional[int] = ..., small_writes_answer: _Optional[bool] = ..., cue_word_start: _Optional[bool] = ..., offload_sentences: _Optional[bool] = ...) -> None: ...

class RStitchParams(_message.Message):
    __slots__ = ("tau",)
    TAU_FIELD_NUMBER: _ClassVar[int]
    tau: float
    def __init__(self, tau: _Optional[float] = ...) -> None: ...

class RelayLLMParams(_message.Message):
    __slots__ = ("max_calls", "max_call_tokens", "min_call_tokens")
    MAX_CALLS_FIELD_NUMBER: _ClassVar[int]
    MAX_CALL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MIN_CALL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    max_calls: int
    max_call_tokens: int
    min_call_tokens: int
    def __init__(self, max_calls: _Optional[int] = ..., max_call_tokens: _Optional[int] = ..., min_call_tokens: _Optional[int] = ...) -> None: ...

class RandomParams(_message.Message):
    __slots__ = ("large_share", "mean_large_tokens", "routing_seed")
    LARGE_SHARE_FIELD_NUMBER: _ClassVar[int]
    MEAN_LARGE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_SEED_FIELD_NUMBER: _ClassVar[int]
    large_share: float
    mean_large_tokens: float
    routing_seed: int
    def __init__(self, large_share: _Optional[float] = ..., mean_large_tokens: _Optional[float] = ..., routing_seed: _Optional[int] = ...) -> None: ...

class PolicySpec(_message.Message):
    __slots__ = ("name", "large_only", "small_only", "fixed_ratio", "relaygen", "rstitch", "relayllm", "random")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LARGE_ONLY_FIELD_NUMBER: _ClassVar[int]
    SMALL_ONLY_FIELD_NUMBER: _ClassVar[int]
    FIXED_RATIO_FIELD_NUMBER: _ClassVar[int]
    RELAYGEN_FIELD_NUMBER: _ClassVar[int]
    RSTITCH_FIELD_NUMBER: _ClassVar[int]
    RELAYLLM_FIELD_NUMBER: _ClassVar[int]
    RANDOM_FIELD_NUMBER: _ClassVar[int]
    name: str
    large_only: LargeOnlyParams
    small_only: SmallOnlyParams
    fixed_ratio: FixedRatioParams
    relaygen: RelayGenParams
    rstitch: RStitchParams
    relayllm: RelayLLMParams
    random: RandomParams
    def __init__(self, name: _Optional[str] = ..., large_only: _Optional[_Union[LargeOnlyParams, _Mapping]] = ..., small_only: _Optional[_Union[SmallOnlyParams, _Mapping]] = ..., fixed_ratio: _Optional[_Union[FixedRatioParams, _Mapping]] = ..., relaygen: _Optional[_Union[RelayGenParams, _Mapping]] = ..., rstitch: _Optional[_Union[RStitchParams, _Mapping]] = ..., relayllm: _Optional[_Union[RelayLLMParams, _Mapping]] = ..., random: _Optional[_Union[RandomParams, _Mapping]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("text", "chat", "policy", "sampling", "request_id", "resume")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    text: str
    chat: ChatPrompt
    policy: PolicySpec
    sampling: _common_pb2.SamplingParams
    request_id: str
    resume: Resume
    def __init__(self, text: _Optional[str] = ..., chat: _Optional[_Union[ChatPrompt, _Mapping]] = ..., policy: _Optional[_Union[PolicySpec, _Mapping]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., request_id: _Optional[str] = ..., resume: _Optional[_Union[Resume, _Mapping]] = ...) -> None: ...

class Resume(_message.Message):
    __slots__ = ("token", "output_token_ids", "output_text", "partial_token_ids", "partial_text")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TEXT_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_TEXT_FIELD_NUMBER: _ClassVar[int]
    token: bytes
    output_token_ids: _containers.RepeatedScalarFieldContainer[int]
    output_text: str
    partial_token_ids: _containers.RepeatedScalarFieldContainer[int]
    partial_text: str
    def __init__(self, token: _Optional[bytes] = ..., output_token_ids: _Optional[_Iterable[int]] = ..., output_text: _Optional[str] = ..., partial_token_ids: _Optional[_Iterable[int]] = ..., partial_text: _Optional[str] = ...) -> None: ...

class SegmentInfo(_message.Message):
    __slots__ = ("index", "tier", "text", "num_tokens", "finish_reason", "matched_stop", "num_dropped_tokens", "num_prompt_tokens", "num_cached_tokens", "timing", "replica_id", "handoff_ms", "controller_ms", "transport_ms", "token_ids")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    MATCHED_STOP_FIELD_NUMBER: _ClassVar[int]
    NUM_DROPPED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_MS_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_MS_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_MS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    index: int
    tier: _common_pb2.Tier
    text: str
    num_tokens: int
    finish_reason: _common_pb2.FinishReason
    matched_stop: str
    num_dropped_tokens: int
    num_prompt_tokens: int
    num_cached_tokens: int
    timing: _common_pb2.SegmentTiming
    replica_id: str
    handoff_ms: float
    controller_ms: float
    transport_ms: float
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, index: _Optional[int] = ..., tier: _Optional[_Union[_common_pb2.Tier, str]] = ..., text: _Optional[str] = ..., num_tokens: _Optional[int] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., matched_stop: _Optional[str] = ..., num_dropped_tokens: _Optional[int] = ..., num_prompt_tokens: _Optional[int] = ..., num_cached_tokens: _Optional[int] = ..., timing: _Optional[_Union[_common_pb2.SegmentTiming, _Mapping]] = ..., replica_id: _Optional[str] = ..., handoff_ms: _Optional[float] = ..., controller_ms: _Optional[float] = ..., transport_ms: _Optional[float] = ..., token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RelayStats(_message.Message):
    __slots__ = ("large_tokens", "small_tokens", "large_generated_tokens", "small_generated_tokens", "num_switches", "num_segments", "latency_ms", "finish_reason", "large_token_share", "handoff_mode", "num_migrations")
    LARGE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SMALL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LARGE_GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SMALL_GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_SWITCHES_FIELD_NUMBER: _ClassVar[int]
    NUM_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    LARGE_TOKEN_SHARE_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_MODE_FIELD_NUMBER: _ClassVar[int]
    NUM_MIGRATIONS_FIELD_NUMBER: _ClassVar[int]
    large_tokens: int
    small_tokens: int
    large_generated_tokens: int
    small_generated_tokens: int
    num_switches: int
    num_segments: int
    latency_ms: float
    finish_reason: _common_pb2.FinishReason
    large_token_share: float
    handoff_mode: str
    num_migrations: int
    def __init__(self, large_tokens: _Optional[int] = ..., small_tokens: _Optional[int] = ..., large_generated_tokens: _Optional[int] = ..., small_generated_tokens: _Optional[int] = ..., num_switches: _Optional[int] = ..., num_segments: _Optional[int] = ..., latency_ms: _Optional[float] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., large_token_share: _Optional[float] = ..., handoff_mode: _Optional[str] = ..., num_migrations: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("request_id", "text", "token_ids", "segments", "stats")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    segments: _containers.RepeatedCompositeFieldContainer[SegmentInfo]
    stats: RelayStats
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., segments: _Optional[_Iterable[_Union[SegmentInfo, _Mapping]]] = ..., stats: _Optional[_Union[RelayStats, _Mapping]] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("segment_index", "tier", "text", "token_ids")
    SEGMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    segment_index: int
    tier: _common_pb2.Tier
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, segment_index: _Optional[int] = ..., tier: _Optional[_Union[_common_pb2.Tier, str]] = ..., text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GenerateStreamResponse(_message.Message):
    __slots__ = ("request_id", "delta", "segment_end", "final", "resume_token")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_END_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    delta: TextDelta
    segment_end: SegmentInfo
    final: GenerateResponse
    resume_token: bytes
    def __init__(self, request_id: _Optional[str] = ..., delta: _Optional[_Union[TextDelta, _Mapping]] = ..., segment_end: _Optional[_Union[SegmentInfo, _Mapping]] = ..., final: _Optional[_Union[GenerateResponse, _Mapping]] = ..., resume_token: _Optional[bytes] = ...) -> None: ...
