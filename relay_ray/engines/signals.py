"""Per-token signals computed from the top-k logprobs a tier's engine returns.

vLLM returns at most ``max_logprobs`` (20) log-probabilities per token, so the entropy of
the full next-token distribution is not observable. We take the top-k part exactly and
bound the missing tail: its mass ``r = 1 - sum(top-k p)`` is assumed to sit on tokens as
likely as the least likely returned one, ``p_k``, giving the tail term ``r * -log(p_k)``.
This is the *smallest* entropy the tail can have given that no unseen token is more likely
than ``p_k``; it is exact when the tail is flat at ``p_k`` and under-estimates a long flat
tail by at most ``r * log((V - k) * p_k / r)``. Both tiers of a pair use the same formula,
so thresholds stay comparable. Entropy is normalized by ``log V`` into [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def normalized_entropy(logprobs: Iterable[float], vocab_size: int) -> float:
    """Entropy of the top-k distribution plus the tail bound above, divided by ``log V``."""
    probs = sorted((math.exp(lp) for lp in logprobs), reverse=True)
    if not probs or vocab_size < 2:
        return 0.0
    entropy = -sum(p * math.log(p) for p in probs if p > 0.0)
    tail_mass = 1.0 - sum(probs)
    if tail_mass > 1e-9 and probs[-1] > 0.0:
        entropy += tail_mass * -math.log(probs[-1])
    return min(1.0, max(0.0, entropy / math.log(vocab_size)))


def top_margin(logprobs: Iterable[float]) -> float:
    """Probability margin p(top1) - p(top2); p(top1) when only one value is present."""
    probs = sorted((math.exp(lp) for lp in logprobs), reverse=True)
    if not probs:
        return 0.0
    return probs[0] - (probs[1] if len(probs) > 1 else 0.0)
