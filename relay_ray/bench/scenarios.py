"""What `relay-ray bench` measures: the request mixes (scenarios) and the prompts.

A scenario is one policy with fixed parameters. The relay scenarios are ``fixed-ratio``
patterns: a *cycle* of ``cycle_tokens`` tokens of which ``large_share`` are written by the
large tier, so the large-model token share and the segment lengths are known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LARGE_SHARES = (0.25, 0.70)
CYCLE_TOKENS = (32, 128)  # short segments (8/24 at 25%) and long ones (32/96 at 25%)
CONCURRENCY = (1, 4, 16)

# A reasoning-style prompt of about 300 tokens: long enough that the prefix cache's
# whole blocks matter the way they do in production (system prompt + question).
_PROMPT_BODY = (
    "You are a careful assistant. Think step by step inside <think> tags, then answer. "
    "Question {i}: a warehouse holds {a} crates of {b} boxes each, and every box has {c} items. "
    "A truck takes {d} crates away and then brings back {e} boxes. So we first compute the number "
    "of boxes, then the number of items, and we check the result twice. In summary, show the "
    "work for each product and each sum, and then state the final answer on its own line as "
    "Answer: N. Wait, check that the truck's boxes are added after the crates are removed. "
)


def bench_prompt(i: int) -> str:
    """The ``i``-th benchmark prompt (deterministic, distinct, a few hundred tokens)."""
    a, b, c, d, e = 17 + i, 12 + i % 7, 9 + i % 5, 3 + i % 4, 5 + i % 9
    return _PROMPT_BODY.format(i=i, a=a, b=b, c=c, d=d, e=e)


@dataclass(frozen=True)
class Scenario:
    """One request mix: a policy and its parameters; ``label`` names it in tables."""

    label: str
    policy: str
    params: dict = field(default_factory=dict)
    large_share: float | None = None  # nominal share for fixed-ratio patterns

    @property
    def is_relay(self) -> bool:
        return self.policy not in ("large-only", "small-only")


LARGE_ONLY = Scenario("large-only", "large-only", large_share=1.0)
SMALL_ONLY = Scenario("small-only", "small-only", large_share=0.0)


def fixed_ratio(large_share: float, cycle_tokens: int) -> Scenario:
    """A fixed-ratio pattern writing ``large_share`` of every ``cycle_tokens`` on the large tier."""
    large = max(1, round(large_share * cycle_tokens))
    small = max(1, cycle_tokens - large)
    return Scenario(f"relay {large_share:.0%} {large}/{small}", "fixed-ratio",
                    {"large_tokens": large, "small_tokens": small}, large / (large + small))


# R-Stitch's and RelayLLM's structure: large segments of about one token, ~7.5 switches per
# 200-token answer (~2-4% large share): the pattern where handoffs dominate.
ONE_TOKEN_LARGE = (1, 26)


def relay_matrix(shares=LARGE_SHARES, cycles=CYCLE_TOKENS, one_token_large=ONE_TOKEN_LARGE) -> list[Scenario]:
    patterns = [fixed_ratio(share, cycle) for share in shares for cycle in cycles]
    if one_token_large:
        large, small = one_token_large
        patterns.append(fixed_ratio(large / (large + small), large + small))
    return patterns


def num_requests(concurrency: int, requests_at_1: int) -> int:
    """Requests per measurement: ``requests_at_1`` alone, two full waves when concurrent."""
    return requests_at_1 if concurrency == 1 else 2 * concurrency
