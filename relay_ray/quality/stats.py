"""Statistics of an evaluation: Wilson intervals for accuracies, the exact McNemar test for
paired comparisons against large-only. Pure Python (no scipy).

- :func:`wilson`: the 95% (by default) Wilson score interval of ``k`` successes in ``n``;
  unlike the normal approximation it stays inside [0, 1] and is honest near 0% and 100%.
- :func:`mcnemar_exact`: both runs answered the same items; only the *discordant* items
  count: ``b`` right only in run A, ``c`` right only in run B. Under "no difference" each
  discordant item is a fair coin, so the two-sided p-value is
  ``min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)`` (exact; no continuity
  correction needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

Z95 = 1.959963984540054  # standard normal quantile for a two-sided 95% interval


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` of the proportion ``k / n``; (0, 1) when n == 0."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The interval contains p; rounding put its low end 1e-17 above 0 of 0/n (or its high end
    # below n/n), and a plot's error bar of that width is negative.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def binomial_tail(k: int, n: int) -> Fraction:
    """P(X <= k) for X ~ Binomial(n, 1/2), exact."""
    return Fraction(sum(math.comb(n, i) for i in range(0, min(k, n) + 1)), 2**n)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant items (1.0 if none)."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    return float(min(Fraction(1), 2 * binomial_tail(min(b, c), n)))


@dataclass(frozen=True)
class Paired:
    """A run against a reference run on the same items."""

    only_run: int  # items the run got right and the reference wrong
    only_reference: int  # items the reference got right and the run wrong
    p_value: float

    @property
    def difference(self) -> int:
        return self.only_run - self.only_reference


def paired(run: Sequence[bool], reference: Sequence[bool]) -> Paired:
    """McNemar comparison of two runs' per-item correctness (same items, same order)."""
    if len(run) != len(reference):
        raise ValueError(f"runs cover different items ({len(run)} vs {len(reference)})")
    b = sum(1 for a, r in zip(run, reference) if a and not r)
    c = sum(1 for a, r in zip(run, reference) if r and not a)
    return Paired(b, c, mcnemar_exact(b, c))
