"""The only module that maps protobuf messages to and from :mod:`relay_ray.types`."""

from __future__ import annotations

import uuid

from google.protobuf.message import Message

from relay_ray.controller.events import RelayResult, SegmentFinished, TextDelta
from relay_ray.controller.resume import ResumeInput
from relay_ray.rpc.registration import UNDECODABLE_ID
from relay_ray.errors import RelayInputError
from relay_ray.types import (
    ChatMessage,
    Commit,
    EntropyRule,
    FinishReason,
    KvSession,
    PreparedPrompt,
    PromptInput,
    RelayRequest,
    Sampling,
    SegmentDelta,
    SegmentJob,
    SegmentRecord,
    SegmentResult,
    SegmentTiming,
    SignalRequest,
    StopRule,
    Tier,
    TierInfo,
    TokenSignals,
)
from relay_ray.v1 import common_pb2 as cpb
from relay_ray.v1 import relay_pb2 as rpb
from relay_ray.v1 import segment_pb2 as spb

DEFAULT_MAX_NEW_TOKENS = 256
_TIER_TO_PB = {Tier.LARGE: cpb.TIER_LARGE, Tier.SMALL: cpb.TIER_SMALL}
_TIER_FROM_PB = {v: k for k, v in _TIER_TO_PB.items()}
# oneof field name in PolicySpec.params -> policy registry name
_PARAMS_FIELD_TO_POLICY = {
    "large_only": "large-only", "small_only": "small-only", "fixed_ratio": "fixed-ratio",
    "relaygen": "relaygen", "rstitch": "rstitch", "relayllm": "relayllm", "random": "random",
}


def tier_to_pb(tier: Tier) -> int:
    return _TIER_TO_PB[tier]


def tier_from_pb(value: int, field: str = "tier") -> Tier:
    if value not in _TIER_FROM_PB:
        raise RelayInputError(field, "must be TIER_LARGE or TIER_SMALL")
    return _TIER_FROM_PB[value]


def _set_fields(msg: Message) -> dict:
    """Fields the sender set (proto3 optional / non-empty repeated), as plain values."""
    out = {}
    for fd, value in msg.ListFields():
        if fd.type == fd.TYPE_ENUM and fd.enum_type.name == "Tier":
            value = tier_from_pb(value, fd.name)
        elif fd.is_repeated:
            value = tuple(value)
        out[fd.name] = value
    return out


# ---- prompts and requests ----------------------------------------------------------

def prompt_from_pb(msg: Message) -> PromptInput:
    which = msg.WhichOneof("prompt")
    mode = {"special_tokens": msg.special_tokens} if getattr(msg, "special_tokens", "") else {}
    if which == "chat":
        return PromptInput(messages=tuple(ChatMessage(m.role, m.content) for m in msg.chat.messages), **mode)
    if which == "token_ids":
        return PromptInput(token_ids=tuple(msg.token_ids.ids), **mode)
    return PromptInput(text=msg.text if which == "text" else "", **mode)


def prompt_to_pb(prompt: PromptInput, msg: Message) -> Message:
    if prompt.token_ids:  # segment PrepareRequest only (GenerateRequest has no token-id prompt)
        msg.token_ids.ids.extend(prompt.token_ids)
    elif prompt.messages:
        msg.chat.messages.extend(rpb.ChatMessage(role=m.role, content=m.content) for m in prompt.messages)
    else:
        msg.text = prompt.text
    if hasattr(msg, "special_tokens"):
        msg.special_tokens = prompt.special_tokens
    return msg


def sampling_from_pb(msg: cpb.SamplingParams) -> tuple[Sampling, int]:
    s = Sampling(
        temperature=msg.temperature if msg.HasField("temperature") else 0.0,
        top_p=msg.top_p if msg.HasField("top_p") else 1.0,
        top_k=msg.top_k if msg.HasField("top_k") else 0,
        seed=msg.seed if msg.HasField("seed") else None,
        ignore_eos=msg.ignore_eos,
    )
    return s, msg.max_new_tokens if msg.HasField("max_new_tokens") else DEFAULT_MAX_NEW_TOKENS


def sampling_to_pb(s: Sampling, max_new_tokens: int | None = None) -> cpb.SamplingParams:
    msg = cpb.SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, ignore_eos=s.ignore_eos)
    if s.seed is not None:
        msg.seed = s.seed
    if max_new_tokens is not None:
        msg.max_new_tokens = max_new_tokens
    return msg


def request_from_pb(msg: rpb.GenerateRequest, default_policy: str) -> RelayRequest:
    """Client request -> :class:`RelayRequest`; raises RelayInputError on mismatches."""
    if msg.request_id == UNDECODABLE_ID:
        raise RelayInputError("request", "the message is not a relay_ray.v1.GenerateRequest")
    name = msg.policy.name or default_policy
    which = msg.policy.WhichOneof("params")
    params: dict = {}
    if which is not None:
        if _PARAMS_FIELD_TO_POLICY[which] != name:
            raise RelayInputError("policy.params", f"{which} parameters were given for policy {name!r}")
        params = _set_fields(getattr(msg.policy, which))
    sampling, max_new_tokens = sampling_from_pb(msg.sampling)
    return RelayRequest(
        prompt=prompt_from_pb(msg), policy=name, policy_params=params, sampling=sampling,
        max_new_tokens=max_new_tokens, request_id=msg.request_id or uuid.uuid4().hex,
    )


def policy_spec_to_pb(name: str, params: dict) -> rpb.PolicySpec:
    spec = rpb.PolicySpec(name=name)
    field = {v: k for k, v in _PARAMS_FIELD_TO_POLICY.items()}.get(name)
    if field is not None and params:
        sub = getattr(spec, field)
        for key, value in params.items():
            if isinstance(value, Tier):
                value = tier_to_pb(value)
            if isinstance(value, (list, tuple)):
                getattr(sub, key).extend(value)
            else:
                setattr(sub, key, value)
    return spec


# ---- responses ---------------------------------------------------------------------

_TIMING_FIELDS = ("queue_ms", "prefill_ms", "decode_ms", "total_ms", "engine_in_ms", "engine_step_ms", "engine_out_ms")


def timing_to_pb(t: SegmentTiming) -> cpb.SegmentTiming:
    return cpb.SegmentTiming(**{f: getattr(t, f) for f in _TIMING_FIELDS})


def timing_from_pb(t: cpb.SegmentTiming) -> SegmentTiming:
    return SegmentTiming(**{f: getattr(t, f) for f in _TIMING_FIELDS})


def segment_record_to_pb(r: SegmentRecord) -> rpb.SegmentInfo:
    return rpb.SegmentInfo(
        index=r.index, tier=tier_to_pb(r.tier), text=r.text, num_tokens=r.num_tokens,
        finish_reason=int(r.finish_reason), matched_stop=r.matched_stop,
        num_dropped_tokens=r.num_dropped_tokens, num_prompt_tokens=r.num_prompt_tokens,
        num_cached_tokens=r.num_cached_tokens, timing=timing_to_pb(r.timing),
        replica_id=r.replica_id, handoff_ms=r.handoff_ms, controller_ms=r.controller_ms,
        transport_ms=r.transport_ms,
    )


def result_to_pb(result: RelayResult) -> rpb.GenerateResponse:
    s = result.stats
    stats = rpb.RelayStats(
        large_tokens=s.tokens_by_tier[Tier.LARGE], small_tokens=s.tokens_by_tier[Tier.SMALL],
        large_generated_tokens=s.generated_by_tier[Tier.LARGE],
        small_generated_tokens=s.generated_by_tier[Tier.SMALL],
        num_switches=s.num_switches, num_segments=s.num_segments, latency_ms=s.latency_ms,
        finish_reason=int(s.finish_reason), large_token_share=s.large_token_share,
        handoff_mode=s.handoff_mode.value, num_migrations=s.num_migrations,
    )
    return rpb.GenerateResponse(
        request_id=result.request_id, text=result.text, token_ids=list(result.token_ids),
        segments=[segment_record_to_pb(r) for r in result.segments], stats=stats,
    )


def event_to_pb(request_id: str, event) -> rpb.GenerateStreamResponse:
    if isinstance(event, TextDelta):
        delta = rpb.TextDelta(segment_index=event.segment_index, tier=tier_to_pb(event.tier), text=event.text,
                              token_ids=list(event.token_ids))
        return rpb.GenerateStreamResponse(request_id=request_id, delta=delta)
    if isinstance(event, SegmentFinished):
        info = segment_record_to_pb(event.record)
        info.token_ids.extend(event.token_ids)
        return rpb.GenerateStreamResponse(request_id=request_id, segment_end=info, resume_token=event.resume_token)
    return rpb.GenerateStreamResponse(request_id=event.request_id, final=result_to_pb(event))


def resume_from_pb(msg: rpb.GenerateRequest) -> ResumeInput | None:
    """The request's resume fields, or None for a fresh request."""
    if not msg.HasField("resume"):
        return None
    r = msg.resume
    if not r.token and (r.output_token_ids or r.output_text):
        raise RelayInputError("resume.token", "committed output can only be resumed with the token that came with it")
    return ResumeInput(bytes(r.token), tuple(r.output_token_ids), r.output_text, tuple(r.partial_token_ids),
                       r.partial_text)


# ---- segment service ---------------------------------------------------------------

def stop_rule_to_pb(rule: StopRule) -> spb.StopRule:
    msg = spb.StopRule(
        max_new_tokens=rule.max_new_tokens, min_new_tokens=rule.min_new_tokens,
        stop_strings=list(rule.stop_strings), word_start=rule.word_start,
        string_commit=spb.COMMIT_EXCLUSIVE if rule.string_commit is Commit.EXCLUSIVE else spb.COMMIT_INCLUSIVE,
        stop_token_ids=list(rule.stop_token_ids), retract_string=rule.retract_string,
    )
    if rule.entropy is not None:
        e = rule.entropy
        msg.entropy.CopyFrom(spb.EntropyRule(
            threshold=e.threshold, above=e.above,
            commit=spb.COMMIT_EXCLUSIVE if e.commit is Commit.EXCLUSIVE else spb.COMMIT_INCLUSIVE))
    return msg


def stop_rule_from_pb(msg: spb.StopRule) -> StopRule:
    entropy = None
    if msg.HasField("entropy"):
        e = msg.entropy
        commit = Commit.EXCLUSIVE if e.commit == spb.COMMIT_EXCLUSIVE else Commit.INCLUSIVE
        entropy = EntropyRule(e.threshold, e.above, commit)
    return StopRule(
        max_new_tokens=msg.max_new_tokens, min_new_tokens=msg.min_new_tokens,
        stop_strings=tuple(msg.stop_strings),
        string_commit=Commit.EXCLUSIVE if msg.string_commit == spb.COMMIT_EXCLUSIVE else Commit.INCLUSIVE,
        word_start=msg.word_start, stop_token_ids=tuple(msg.stop_token_ids), entropy=entropy,
        retract_string=msg.retract_string,
    )


_KV_SESSION_TO_PB = {KvSession.NONE: spb.KV_SESSION_NONE, KvSession.KEEP: spb.KV_SESSION_KEEP,
                     KvSession.END: spb.KV_SESSION_END}
_KV_SESSION_FROM_PB = {v: k for k, v in _KV_SESSION_TO_PB.items()}  # unknown values: NONE (plain)


def job_to_pb(job: SegmentJob) -> spb.SegmentJob:
    msg = spb.SegmentJob(
        request_id=job.request_id, segment_index=job.segment_index, stop=stop_rule_to_pb(job.stop),
        sampling=sampling_to_pb(job.sampling),
        signals=spb.Signals(logprob=job.signals.logprob, entropy=job.signals.entropy, margin=job.signals.margin),
        stream_interval_tokens=job.stream_interval_tokens, prefill_only=job.prefill_only,
        stream_block_tokens=job.stream_block_tokens, resume_token_ids=list(job.resume_token_ids),
        timeout_s=job.timeout_s, kv_session=_KV_SESSION_TO_PB[job.kv_session],
    )
    if job.prefix_text is not None:
        msg.prefix_text = job.prefix_text
    else:
        msg.prefix_token_ids.ids.extend(job.prefix_token_ids)
    return msg


def job_from_pb(msg: spb.SegmentJob) -> SegmentJob:
    sampling, _ = sampling_from_pb(msg.sampling)
    text = msg.prefix_text if msg.WhichOneof("prefix") == "prefix_text" else None
    return SegmentJob(
        request_id=msg.request_id, segment_index=msg.segment_index, stop=stop_rule_from_pb(msg.stop),
        sampling=sampling, prefix_token_ids=tuple(msg.prefix_token_ids.ids), prefix_text=text,
        signals=SignalRequest(msg.signals.logprob, msg.signals.entropy, msg.signals.margin),
        stream_interval_tokens=msg.stream_interval_tokens, prefill_only=msg.prefill_only,
        stream_block_tokens=msg.stream_block_tokens, resume_token_ids=tuple(msg.resume_token_ids),
        timeout_s=msg.timeout_s, kv_session=_KV_SESSION_FROM_PB.get(msg.kv_session, KvSession.NONE),
    )


def update_to_pb(item: SegmentDelta | SegmentResult) -> spb.SegmentUpdate:
    if isinstance(item, SegmentDelta):
        return spb.SegmentUpdate(delta=spb.SegmentDelta(token_ids=list(item.token_ids), text=item.text))
    sig = item.signals
    return spb.SegmentUpdate(result=spb.SegmentResult(
        token_ids=list(item.token_ids), text=item.text, finish_reason=int(item.finish_reason),
        text_offsets=list(item.text_offsets), matched_stop=item.matched_stop,
        num_dropped_tokens=item.num_dropped_tokens, num_prompt_tokens=item.num_prompt_tokens,
        num_cached_tokens=item.num_cached_tokens,
        signals=spb.TokenSignals(logprob=sig.logprob, entropy=sig.entropy, margin=sig.margin),
        timing=timing_to_pb(item.timing), replica_id=item.replica_id, endpoint=item.endpoint,
    ))


def update_from_pb(msg: spb.SegmentUpdate) -> SegmentDelta | SegmentResult:
    if msg.WhichOneof("update") == "delta":
        return SegmentDelta(tuple(msg.delta.token_ids), msg.delta.text)
    r = msg.result
    return SegmentResult(
        token_ids=tuple(r.token_ids), text=r.text, finish_reason=FinishReason(r.finish_reason),
        text_offsets=tuple(r.text_offsets), matched_stop=r.matched_stop,
        num_dropped_tokens=r.num_dropped_tokens, num_prompt_tokens=r.num_prompt_tokens,
        num_cached_tokens=r.num_cached_tokens,
        signals=TokenSignals(tuple(r.signals.logprob), tuple(r.signals.entropy), tuple(r.signals.margin)),
        timing=timing_from_pb(r.timing), replica_id=r.replica_id, endpoint=r.endpoint,
    )


def tier_info_to_pb(info: TierInfo) -> spb.TierInfo:
    return spb.TierInfo(
        tier=tier_to_pb(info.tier), model=info.model, tokenizer_fingerprint=info.tokenizer_fingerprint,
        vocab_size=info.vocab_size, max_model_len=info.max_model_len, eos_token_ids=list(info.eos_token_ids),
        think_close_token_ids=list(info.think_close_token_ids), replica_id=info.replica_id,
        block_size=info.block_size,
    )


def tier_info_from_pb(msg: spb.TierInfo) -> TierInfo:
    return TierInfo(
        tier=tier_from_pb(msg.tier), model=msg.model, tokenizer_fingerprint=msg.tokenizer_fingerprint,
        vocab_size=msg.vocab_size, max_model_len=msg.max_model_len, eos_token_ids=tuple(msg.eos_token_ids),
        think_close_token_ids=tuple(msg.think_close_token_ids), replica_id=msg.replica_id,
        block_size=msg.block_size,
    )


def prepared_to_pb(p: PreparedPrompt) -> spb.PreparedPrompt:
    return spb.PreparedPrompt(token_ids=list(p.token_ids), text=p.text)


def prepared_from_pb(msg: spb.PreparedPrompt) -> PreparedPrompt:
    return PreparedPrompt(tuple(msg.token_ids), msg.text)
