"""Validation of client requests: every error names the offending field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from relay_ray.controller.attempts import RetryPolicy
from relay_ray.controller.limits import InputLimits, check_request
from relay_ray.errors import RelayInputError
from relay_ray.policies import Policy, make_policy
from relay_ray.types import PreparedPrompt, RelayRequest, Tier, TierInfo

CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class ControllerLimits:
    """Limits the controller enforces on every request."""

    max_new_tokens: int = 4096
    input: InputLimits = InputLimits()  # bounds on every client input (controller/limits.py)
    stream_interval_tokens: int = 8
    max_segments: int | None = None  # None: 2 * max_new_tokens + 16 per request
    # Warm the idle tier's prefix cache (controller/prefill_ahead.py). Off by default: on the
    # 2-core CPU it raised prefix-cache hits but cost efficiency (docs/benchmarks.md).
    prefill_ahead: bool = False
    # Only the large tier by default: its delta prefill is the expensive one; warming the
    # small one saves little and costs a call.
    prefill_ahead_tiers: frozenset[Tier] = frozenset({Tier.LARGE})
    # Tiers asked to keep a request's whole KV between its jobs (engines/session/); there
    # prefill-ahead feeds every ``feed_interval_tokens`` tokens, not whole blocks.
    kv_session_tiers: frozenset[Tier] = frozenset()
    feed_interval_tokens: int = 4
    # Warm (or feed) only when the generating segment is at least this likely to outlast the
    # warm-up, judged by the policy's recent segment lengths (WarmTiming); 0: by its budget alone.
    prefill_ahead_hide_probability: float = 0.5
    # Feed only when the feed can end before the switch (the same gate as warm-ups).
    feed_when_hidden: bool = True
    # Segment migration after a tier fault, per tier (controller/attempts.py).
    retry: Mapping[Tier, RetryPolicy] = field(default_factory=lambda: {tier: RetryPolicy() for tier in Tier})

    def retry_policy(self, tier: Tier) -> RetryPolicy:
        return self.retry.get(tier) or RetryPolicy()


def validate_request(request: RelayRequest, limits: ControllerLimits) -> Policy:
    """Check a request before any tier is called; return its policy, ready to run."""
    check_request(request, limits.input)
    prompt = request.prompt
    if sum(map(bool, (prompt.text, prompt.messages, prompt.token_ids))) > 1:
        raise RelayInputError("prompt", "give one of text, messages or token_ids, not several")
    if 4 * len(prompt.token_ids) > limits.input.max_prompt_bytes:  # an id counts as 4 bytes (int32)
        raise RelayInputError("prompt.token_ids", f"{len(prompt.token_ids)} ids exceed the limit of "
                              f"{limits.input.max_prompt_bytes // 4} (max_prompt_bytes / 4)")
    if prompt.messages:
        for i, msg in enumerate(prompt.messages):
            if msg.role not in CHAT_ROLES:
                raise RelayInputError(
                    f"prompt.messages[{i}].role",
                    f"invalid role {msg.role!r}; use one of {', '.join(CHAT_ROLES)}",
                )
        if not any(m.content for m in prompt.messages):
            raise RelayInputError("prompt.messages", "all messages are empty")
    elif not prompt.token_ids and not prompt.text.strip():  # token ids: the tier checks them
        raise RelayInputError("prompt", "the prompt is empty")
    if not 1 <= request.max_new_tokens <= limits.max_new_tokens:
        raise RelayInputError(
            "max_new_tokens", f"must be between 1 and {limits.max_new_tokens}, got {request.max_new_tokens}"
        )
    s = request.sampling
    if not 0.0 <= s.temperature <= 100.0:
        raise RelayInputError("sampling.temperature", f"must be in [0, 100], got {s.temperature}")
    if not 0.0 < s.top_p <= 1.0:
        raise RelayInputError("sampling.top_p", f"must be in (0, 1], got {s.top_p}")
    if s.top_k < 0:
        raise RelayInputError("sampling.top_k", f"must be >= 0 (0 disables it), got {s.top_k}")
    if s.seed is not None and s.seed < 0:
        raise RelayInputError("sampling.seed", f"must be >= 0, got {s.seed}")
    return make_policy(request.policy, request.policy_params)


def check_prompt_fits(prepared: PreparedPrompt, max_new_tokens: int, infos: Mapping[Tier, TierInfo]) -> None:
    """The prompt plus the requested tokens must fit the smaller context of the two tiers."""
    context = min(info.max_model_len for info in infos.values())
    num_prompt = len(prepared.token_ids)
    if num_prompt >= context:
        raise RelayInputError("prompt", f"{num_prompt} prompt tokens do not fit the model context of {context}")
    if num_prompt + max_new_tokens > context:
        raise RelayInputError(
            "max_new_tokens",
            f"{num_prompt} prompt tokens + {max_new_tokens} new tokens exceed the model context of "
            f"{context}; ask for at most {context - num_prompt}",
        )
