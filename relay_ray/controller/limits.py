"""Bounds on every client input: no request can make a replica do unbounded work.

Each limit has a name, a default and a clear error (``RelayInputError`` naming the field,
INVALID_ARGUMENT on the wire). The tier checks the segment jobs it receives against the same
kind of bounds (:func:`check_job`), as a second line of defence.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from relay_ray.errors import RelayInputError
from relay_ray.types import KvSession, RelayRequest, SegmentJob, TierInfo

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/@+=-]*$")


class InputLimits(BaseModel):
    """Named limits on client input (``ControllerConfig.input_limits``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_prompt_bytes: int = Field(1 << 20, ge=1, description="UTF-8 bytes of the prompt (all messages), checked "
                                  "before anything is tokenized")
    max_prompt_bytes_per_token: int = Field(
        16, ge=1, description="a prompt longer than this many UTF-8 bytes per token of the smaller tier context is "
        "refused before it is tokenized (it cannot fit; tokenizing it would hold up the tier)")
    max_chat_messages: int = Field(256, ge=1, description="messages in a chat prompt")
    max_stop_strings: int = Field(64, ge=1, description="strings a policy may stop on (relaygen cues + sentence "
                                  "ends): each is scanned on every token")
    max_stop_string_chars: int = Field(32, ge=1, description="characters of one stop string")
    max_request_id_chars: int = Field(128, ge=1, description="characters of request_id (letters, digits, ._:/@+=-)")
    min_fixed_segment_tokens: int = Field(2, ge=1, description="fixed-ratio segment lengths: 1/1 would re-send the "
                                          "prefix once per token")
    special_tokens: Literal["reject", "escape", "allow"] = Field(
        "reject", description="special-token strings (e.g. <|im_start|>) in chat message content: reject the "
        "request, escape them (tokenized as plain text), or allow them")


def check_request(request: RelayRequest, limits: InputLimits) -> None:
    """The limits that need no tokenizer (policy parameters are checked with the policy)."""
    prompt = request.prompt
    if len(prompt.messages) > limits.max_chat_messages:
        raise RelayInputError("prompt.messages", f"{len(prompt.messages)} messages exceed the limit of "
                              f"{limits.max_chat_messages}")
    size = len(prompt.text.encode()) + sum(len(m.content.encode()) + len(m.role) for m in prompt.messages)
    if size > limits.max_prompt_bytes:
        raise RelayInputError("prompt", f"{size} bytes exceed the limit of {limits.max_prompt_bytes}")
    rid = request.request_id
    if len(rid) > limits.max_request_id_chars or not REQUEST_ID_PATTERN.match(rid):
        raise RelayInputError("request_id", f"at most {limits.max_request_id_chars} characters of letters, digits "
                              "and ._:/@+=-")
    params = request.policy_params or {}
    strings = [s for key in ("cues", "sentence_ends") for s in params.get(key) or ()]
    if len(strings) > limits.max_stop_strings:
        raise RelayInputError("policy.cues", f"{len(strings)} cues and sentence ends exceed the limit of "
                              f"{limits.max_stop_strings}")
    if any(len(str(s)) > limits.max_stop_string_chars for s in strings):
        raise RelayInputError("policy.cues", f"cues and sentence ends have at most {limits.max_stop_string_chars} "
                              "characters")
    if request.policy == "fixed-ratio":
        for key in ("large_tokens", "small_tokens"):
            value = params.get(key)
            if isinstance(value, int) and value < limits.min_fixed_segment_tokens:
                raise RelayInputError(f"policy.{key}", f"must be >= {limits.min_fixed_segment_tokens}")


def check_prompt_size(request: RelayRequest, context_tokens: int, limits: InputLimits) -> None:
    """A prompt that cannot fit the context is refused without tokenizing it."""
    prompt = request.prompt
    size = len(prompt.text.encode()) + sum(len(m.content.encode()) for m in prompt.messages)
    bound = context_tokens * limits.max_prompt_bytes_per_token
    if size > bound:
        raise RelayInputError("prompt", f"{size} bytes cannot fit the model context of {context_tokens} tokens "
                              f"(limit {bound} bytes)")


def check_job(job: SegmentJob, info: TierInfo, limits: InputLimits) -> None:
    """A tier's own check of a segment job (defence in depth: the controller checked it too).
    A KV-session end carries no prefix: it only releases the request's session."""
    if job.kv_session is KvSession.END:
        return
    stop = job.stop
    if not 1 <= stop.max_new_tokens <= info.max_model_len:
        raise RelayInputError("segment.stop.max_new_tokens", f"must be in [1, {info.max_model_len}]")
    if not 0 <= stop.min_new_tokens <= stop.max_new_tokens:
        raise RelayInputError("segment.stop.min_new_tokens", "must be in [0, max_new_tokens]")
    strings = (*stop.stop_strings, stop.retract_string) if stop.retract_string else stop.stop_strings
    if len(strings) > limits.max_stop_strings or any(len(s) > limits.max_stop_string_chars for s in strings):
        raise RelayInputError("segment.stop.stop_strings", f"at most {limits.max_stop_strings} strings of "
                              f"{limits.max_stop_string_chars} characters")
    if any(s == "" for s in stop.stop_strings):
        raise RelayInputError("segment.stop.stop_strings", "empty stop string")
    if job.prefix_text is not None:
        if len(job.prefix_text.encode()) > limits.max_prompt_bytes + 8 * info.max_model_len:
            raise RelayInputError("segment.prefix_text", "longer than any prompt and output can be")
    else:
        if not job.prefix_token_ids:
            raise RelayInputError("segment.prefix_token_ids", "a segment needs a prefix")
        _check_ids("segment.prefix_token_ids", job.prefix_token_ids, info)
    _check_ids("segment.resume_token_ids", job.resume_token_ids, info)
    if len(job.prefix_token_ids) + len(job.resume_token_ids) >= info.max_model_len:
        raise RelayInputError("segment.prefix_token_ids", f"prefix exceeds the context of {info.max_model_len}")
    if job.stream_interval_tokens < 0 or job.stream_block_tokens < 0 or job.timeout_s < 0:
        raise RelayInputError("segment", "stream intervals and timeout must be >= 0")
    s = job.sampling
    if not (0.0 <= s.temperature <= 100.0 and 0.0 < s.top_p <= 1.0 and s.top_k >= 0):
        raise RelayInputError("segment.sampling", "temperature in [0, 100], top_p in (0, 1], top_k >= 0")


def _check_ids(field: str, ids: tuple[int, ...], info: TierInfo) -> None:
    if len(ids) > info.max_model_len or any(not 0 <= t < info.vocab_size for t in ids):
        raise RelayInputError(field, f"at most {info.max_model_len} ids in [0, {info.vocab_size})")
