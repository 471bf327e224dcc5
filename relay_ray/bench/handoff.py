"""Per-token time of each tier and the cost of one handoff, measured through the served relay.

A handoff is the gap one switch adds: controller + transport time outside the tiers
(``handoff_ms``) plus the next segment's queueing and delta prefill inside the tier
(``queue_ms + prefill_ms``, i.e. its time to first token).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

from relay_ray.client import RelayClient, build_request

PROMPTS = [f"So we add {i} and {7 * i + 3}, so the sum is {8 * i + 3}. Now compute the product" for i in range(64)]


@dataclass(frozen=True)
class HandoffBench:
    large_ms_per_token: float
    small_ms_per_token: float
    handoff_p50_ms: float
    handoff_p95_ms: float
    outside_tier_p50_ms: float
    delta_prefill_p50_ms: float
    cached_prefix_share: float
    num_handoffs: int
    num_requests: int


def _decode_ms_per_token(client: RelayClient, policy: str, prompts, new_tokens: int) -> float:
    per_token = []
    for prompt in prompts:
        seg = client.generate(build_request(prompt, policy, max_new_tokens=new_tokens)).segments[0]
        if seg.num_tokens > 1:
            per_token.append(seg.timing.decode_ms / (seg.num_tokens - 1))
    return statistics.median(per_token)


def run(client: RelayClient, num_requests: int = 16, new_tokens: int = 96, large_tokens: int = 24,
        small_tokens: int = 8, progress=None) -> HandoffBench:
    prompts = PROMPTS[:num_requests]
    for prompt in prompts[:2]:  # warm both tiers
        client.generate(build_request(prompt, "fixed-ratio", max_new_tokens=16))
    large = _decode_ms_per_token(client, "large-only", prompts, new_tokens)
    small = _decode_ms_per_token(client, "small-only", prompts, new_tokens)
    handoffs, outside, prefill, cached, prompt_tokens = [], [], [], 0, 0
    params = {"large_tokens": large_tokens, "small_tokens": small_tokens}
    for i, prompt in enumerate(prompts):
        response = client.generate(build_request(prompt, "fixed-ratio", params, max_new_tokens=new_tokens))
        for seg in response.segments[1:]:  # every segment after the first starts with a switch
            ttft = seg.timing.queue_ms + seg.timing.prefill_ms
            handoffs.append(seg.handoff_ms + ttft)
            outside.append(seg.handoff_ms)
            prefill.append(ttft)
            cached += seg.num_cached_tokens
            prompt_tokens += seg.num_prompt_tokens
        if progress:
            progress(i + 1, len(prompts))
    handoffs.sort()
    return HandoffBench(
        large_ms_per_token=large,
        small_ms_per_token=small,
        handoff_p50_ms=statistics.median(handoffs),
        handoff_p95_ms=handoffs[int(0.95 * (len(handoffs) - 1))],
        outside_tier_p50_ms=statistics.median(outside),
        delta_prefill_p50_ms=statistics.median(prefill),
        cached_prefix_share=cached / prompt_tokens if prompt_tokens else 0.0,
        num_handoffs=len(handoffs),
        num_requests=len(prompts),
    )


def table(result: HandoffBench) -> str:
    r = result
    rows = [
        ("large tier, decode per token", f"{r.large_ms_per_token:.2f} ms"),
        ("small tier, decode per token", f"{r.small_ms_per_token:.2f} ms"),
        ("large / small per-token ratio", f"{r.large_ms_per_token / r.small_ms_per_token:.1f}x"),
        ("handoff p50 (outside tier + next TTFT)", f"{r.handoff_p50_ms:.2f} ms"),
        ("handoff p95", f"{r.handoff_p95_ms:.2f} ms"),
        ("  of which controller + transport p50", f"{r.outside_tier_p50_ms:.2f} ms"),
        ("  of which queue + delta prefill p50", f"{r.delta_prefill_p50_ms:.2f} ms"),
        ("prefix tokens from the prefix cache at handoffs", f"{100 * r.cached_prefix_share:.1f}%"),
        ("handoffs measured / requests", f"{r.num_handoffs} / {r.num_requests}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
    return "\n".join(lines)


def as_dict(result: HandoffBench) -> dict:
    return asdict(result)

