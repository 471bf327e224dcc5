from relay_ray.v1 import common_pb2 as _common_pb2
from relay_ray.v1 import relay_pb2 as _relay_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Commit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMIT_INCLUSIVE: _ClassVar[Commit]
    COMMIT_EXCLUSIVE: _ClassVar[Commit]

class KvSession(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KV_SESSION_NONE: _ClassVar[KvSession]
    KV_SESSION_KEEP: _ClassVar[KvSession]
    KV_SESSION_END: _ClassVar[KvSession]
COMMIT_INCLUSIVE: Commit
COMMIT_EXCLUSIVE: Commit
KV_SESSION_NONE: KvSession
KV_SESSION_KEEP: KvSession
KV_SESSION_END: KvSession

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TierInfo(_message.Message):
    __slots__ = ("tier", "model", "tokenizer_fingerprint", "vocab_size", "max_model_len", "eos_token_ids", "think_close_token_ids", "replica_id", "block_size")
    TIER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    THINK_CLOSE_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    tier: _common_pb2.Tier
    model: str
    tokenizer_fingerprint: str
    vocab_size: int
    max_model_len: int
    eos_token_ids: _containers.RepeatedScalarFieldContainer[int]
    think_close_token_ids: _containers.RepeatedScalarFieldContainer[int]
    replica_id: str
    block_size: int
    def __init__(self, tier: _Optional[_Union[_common_pb2.Tier, str]] = ..., model: _Optional[str] = ..., tokenizer_fingerprint: _Optional[str] = ..., vocab_size: _Optional[int] = ..., max_model_len: _Optional[int] = ..., eos_token_ids: _Optional[_Iterable[int]] = ..., think_close_token_ids: _Optional[_Iterable[int]] = ..., replica_id: _Optional[str] = ..., block_size: _Optional[int] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("text", "chat", "token_ids", "special_tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: str
    chat: _relay_pb2.ChatPrompt
    token_ids: TokenIds
    special_tokens: str
    def __init__(self, text: _Optional[str] = ..., chat: _Optional[_Union[_relay_pb2.ChatPrompt, _Mapping]] = ..., token_ids: _Optional[_Union[TokenIds, _Mapping]] = ..., special_tokens: _Optional[str] = ...) -> None: ...

class PreparedPrompt(_message.Message):
    __slots__ = ("token_ids", "text")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    text: str
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., text: _Optional[str] = ...) -> None: ...

class EntropyRule(_message.Message):
    __slots__ = ("threshold", "above", "commit")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ABOVE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    above: bool
    commit: Commit
    def __init__(self, threshold: _Optional[float] = ..., above: _Optional[bool] = ..., commit: _Optional[_Union[Commit, str]] = ...) -> None: ...

class StopRule(_message.Message):
    __slots__ = ("max_new_tokens", "min_new_tokens", "stop_strings", "string_commit", "word_start", "stop_token_ids", "entropy", "retract_string")
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MIN_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_STRINGS_FIELD_NUMBER: _ClassVar[int]
    STRING_COMMIT_FIELD_NUMBER: _ClassVar[int]
    WORD_START_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    RETRACT_STRING_FIELD_NUMBER: _ClassVar[int]
    max_new_tokens: int
    min_new_tokens: int
    stop_strings: _containers.RepeatedScalarFieldContainer[str]
    string_commit: Commit
    word_start: bool
    stop_token_ids: _containers.RepeatedScalarFieldContainer[int]
    entropy: EntropyRule
    retract_string: str
    def __init__(self, max_new_tokens: _Optional[int] = ..., min_new_tokens: _Optional[int] = ..., stop_strings: _Optional[_Iterable[str]] = ..., string_commit: _Optional[_Union[Commit, str]] = ..., word_start: _Optional[bool] = ..., stop_token_ids: _Optional[_Iterable[int]] = ..., entropy: _Optional[_Union[EntropyRule, _Mapping]] = ..., retract_string: _Optional[str] = ...) -> None: ...

class Signals(_message.Message):
    __slots__ = ("logprob", "entropy", "margin")
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    logprob: bool
    entropy: bool
    margin: bool
    def __init__(self, logprob: _Optional[bool] = ..., entropy: _Optional[bool] = ..., margin: _Optional[bool] = ...) -> None: ...

class SegmentJob(_message.Message):
    __slots__ = ("request_id", "segment_index", "prefix_token_ids", "prefix_text", "stop", "sampling", "signals", "stream_interval_tokens", "prefill_only", "stream_block_tokens", "resume_token_ids", "timeout_s", "kv_session")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREFIX_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_TEXT_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    STREAM_INTERVAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_ONLY_FIELD_NUMBER: _ClassVar[int]
    STREAM_BLOCK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    KV_SESSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    segment_index: int
    prefix_token_ids: TokenIds
    prefix_text: str
    stop: StopRule
    sampling: _common_pb2.SamplingParams
    signals: Signals
    stream_interval_tokens: int
    prefill_only: bool
    stream_block_tokens: int
    resume_token_ids: _containers.RepeatedScalarFieldContainer[int]
    timeout_s: float
    kv_session: KvSession
    def __init__(self, request_id: _Optional[str] = ..., segment_index: _Optional[int] = ..., prefix_token_ids: _Optional[_Union[TokenIds, _Mapping]] = ..., prefix_text: _Optional[str] = ..., stop: _Optional[_Union[StopRule, _Mapping]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., signals: _Optional[_Union[Signals, _Mapping]] = ..., stream_interval_tokens: _Optional[int] = ..., prefill_only: _Optional[bool] = ..., stream_block_tokens: _Optional[int] = ..., resume_token_ids: _Optional[_Iterable[int]] = ..., timeout_s: _Optional[float] = ..., kv_session: _Optional[_Union[KvSession, str]] = ...) -> None: ...

class TokenIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class TokenSignals(_message.Message):
    __slots__ = ("logprob", "entropy", "margin")
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    logprob: _containers.RepeatedScalarFieldContainer[float]
    entropy: _containers.RepeatedScalarFieldContainer[float]
    margin: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, logprob: _Optional[_Iterable[float]] = ..., entropy: _Optional[_Iterable[float]] = ..., margin: _Optional[_Iterable[float]] = ...) -> None: ...

class SegmentResult(_message.Message):
    __slots__ = ("token_ids", "text", "finish_reason", "text_offsets", "matched_stop", "num_dropped_tokens", "num_prompt_tokens", "num_cached_tokens", "signals", "timing", "replica_id", "endpoint")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_STOP_FIELD_NUMBER: _ClassVar[int]
    NUM_DROPPED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NUM_CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    text: str
    finish_reason: _common_pb2.FinishReason
    text_offsets: _containers.RepeatedScalarFieldContainer[int]
    matched_stop: str
    num_dropped_tokens: int
    num_prompt_tokens: int
    num_cached_tokens: int
    signals: TokenSignals
    timing: _common_pb2.SegmentTiming
    replica_id: str
    endpoint: str
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., text: _Optional[str] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., text_offsets: _Optional[_Iterable[int]] = ..., matched_stop: _Optional[str] = ..., num_dropped_tokens: _Optional[int] = ..., num_prompt_tokens: _Optional[int] = ..., num_cached_tokens: _Optional[int] = ..., signals: _Optional[_Union[TokenSignals, _Mapping]] = ..., timing: _Optional[_Union[_common_pb2.SegmentTiming, _Mapping]] = ..., replica_id: _Optional[str] = ..., endpoint: _Optional[str] = ...) -> None: ...

class SegmentDelta(_message.Message):
    __slots__ = ("token_ids", "text")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    text: str
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., text: _Optional[str] = ...) -> None: ...

class SegmentUpdate(_message.Message):
    __slots__ = ("delta", "result")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    delta: SegmentDelta
    result: SegmentResult
    def __init__(self, delta: _Optional[_Union[SegmentDelta, _Mapping]] = ..., result: _Optional[_Union[SegmentResult, _Mapping]] = ...) -> None: ...
