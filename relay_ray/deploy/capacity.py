"""Capacity model of a relay deployment (pure: no I/O, no clock).

Inputs, all measured with Locust (``relay-ray plan``) or written down as assumptions:

- a **capacity curve** per tier: the tier served alone (``large-only`` / ``small-only``
  requests of a fixed length) at increasing concurrency: generated tokens per second of the
  deployment and the p95 (and mean) request latency per generated token;
- the **demand** of each policy in the mix: tokens each tier generates per request (dropped
  tokens included: they cost decode), prefill tokens, switches;
- the **switch overhead**: latency per switch not explained by the tiers' token times
  (handoff, delta prefill), from the mix at one user.

Model: at ``rate`` requests/s a tier must do ``rate * sum(weight * work)`` per second, spread
over its replicas, where a request's work on a tier is the tokens it generates there plus its
uncached prefill tokens times the tier's ``prefill_cost`` (decode-token equivalents: about 1 on
a compute-bound CPU), counted in the curve's own tokens (whose requests prefill too). On the tier's curve that throughput per replica happens at some
concurrency; there a token costs ``s_per_token_p95`` (interpolated). A policy's p95 latency is
``sum over tiers(tokens on the tier * that tier's p95 seconds per token) + switches *
overhead``. A rate is feasible when no tier is past the top of its curve and every policy's
p95 meets the SLO. Replicas scale linearly (each brings the capacity its curve measured per
replica: on GPUs, measure the small tier packed as deployed, e.g. 4 replicas per GPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

TIERS = ("large", "small")


@dataclass(frozen=True)
class CurvePoint:
    users: float  # concurrent requests on the tier (the whole measured deployment)
    tokens_per_s: float  # generated tokens per second, whole measured deployment
    s_per_token_p95: float  # p95 request latency / tokens per request
    s_per_token_mean: float
    requests: int = 0  # requests the point was measured on


@dataclass(frozen=True)
class OperatingPoint:
    users_per_replica: float
    s_per_token_p95: float
    s_per_token_mean: float
    utilization: float  # share of the curve's top throughput


@dataclass(frozen=True)
class TierCurve:
    tier: str
    replicas: int  # replicas the curve was measured with
    points: tuple[CurvePoint, ...]
    prefill_per_token: float = 0.0  # uncached prefill tokens per generated token of the curve's requests
    prefill_cost: float = 1.0  # decode-token equivalents of one prefill token on this tier's hardware

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError(f"{self.tier}: a capacity curve needs at least one point")
        object.__setattr__(self, "points", tuple(sorted(self.points, key=lambda p: p.users)))

    @property
    def max_tokens_per_s_per_replica(self) -> float:
        return max(p.tokens_per_s for p in self.points) / self.replicas

    def operating_point(self, tokens_per_s_per_replica: float) -> OperatingPoint | None:
        """Where on the curve a replica generates this many tokens/s (None: past the top).

        Below the first point latency is the first point's (one stream cannot be faster);
        between points, linear. Points past the throughput maximum are ignored (overload).
        """
        top = max(range(len(self.points)), key=lambda i: self.points[i].tokens_per_s)
        usable = self.points[:top + 1]
        u = tokens_per_s_per_replica * self.replicas  # in the measured deployment's terms
        peak = usable[-1].tokens_per_s
        if u > peak * (1 + 1e-9):
            return None
        first = usable[0]
        if u <= first.tokens_per_s:
            users = first.users * (u / first.tokens_per_s if first.tokens_per_s else 0.0)
            return OperatingPoint(users / self.replicas, first.s_per_token_p95, first.s_per_token_mean,
                                  u / peak if peak else 0.0)
        for lo, hi in zip(usable, usable[1:]):
            if u <= hi.tokens_per_s:
                span = hi.tokens_per_s - lo.tokens_per_s
                f = (u - lo.tokens_per_s) / span if span > 0 else 1.0
                lerp = lambda a, b: a + f * (b - a)  # noqa: E731
                return OperatingPoint(lerp(lo.users, hi.users) / self.replicas,
                                      lerp(lo.s_per_token_p95, hi.s_per_token_p95),
                                      lerp(lo.s_per_token_mean, hi.s_per_token_mean), u / peak)
        last = usable[-1]
        return OperatingPoint(last.users / self.replicas, last.s_per_token_p95, last.s_per_token_mean, 1.0)


@dataclass(frozen=True)
class PolicyDemand:
    """What one request of a policy asks of each tier (means over measured requests)."""

    policy: str
    weight: float
    generated: Mapping[str, float]  # tier -> tokens generated per request (dropped included)
    prefill: Mapping[str, float] = field(default_factory=dict)  # tier -> uncached prompt tokens
    switches: float = 0.0
    latency_s: float = 0.0  # mean latency at one user (calibrates the switch overhead)
    requests: int = 0


def _shares(mix: Sequence[PolicyDemand]) -> list[tuple[PolicyDemand, float]]:
    total = sum(d.weight for d in mix)
    if total <= 0:
        raise ValueError("the policy mix has no weight")
    return [(d, d.weight / total) for d in mix]


def tokens_per_request(mix: Sequence[PolicyDemand], tier: str) -> float:
    """Mean tokens a request of the mix generates on ``tier``."""
    return sum(share * d.generated.get(tier, 0.0) for d, share in _shares(mix))


def work_per_request(mix: Sequence[PolicyDemand], curve: TierCurve) -> float:
    """Mean work a request of the mix asks of ``curve``'s tier, in the curve's generated tokens:
    a prefill token costs ``prefill_cost`` decode tokens, and each of the curve's own generated
    tokens came with ``prefill_per_token`` prefill tokens."""
    c = curve.prefill_cost
    work = sum(share * (d.generated.get(curve.tier, 0.0) + c * d.prefill.get(curve.tier, 0.0))
               for d, share in _shares(mix))
    return work / (1 + c * curve.prefill_per_token)


def switch_overhead_s(mix: Sequence[PolicyDemand], curves: Mapping[str, TierCurve]) -> float:
    """Latency per switch not explained by the tiers' token times at one user (>= 0)."""
    num = den = 0.0
    for d, share in _shares(mix):
        if d.switches <= 0 or d.latency_s <= 0:
            continue
        explained = sum(d.generated.get(t, 0.0) * curves[t].points[0].s_per_token_mean for t in curves)
        num += share * (d.latency_s - explained)
        den += share * d.switches
    return max(num / den, 0.0) if den else 0.0


@dataclass(frozen=True)
class Prediction:
    rate_rps: float
    feasible: bool  # no tier past the top of its curve
    tiers: Mapping[str, OperatingPoint | None]
    p95_s: Mapping[str, float]  # per policy (inf when infeasible)

    @property
    def worst_p95_s(self) -> float:
        return max(self.p95_s.values()) if self.p95_s else 0.0


def predict(rate_rps: float, mix: Sequence[PolicyDemand], curves: Mapping[str, TierCurve],
            replicas: Mapping[str, int], overhead_s: float) -> Prediction:
    tiers: dict[str, OperatingPoint | None] = {}
    for tier, curve in curves.items():
        demand = rate_rps * work_per_request(mix, curve)
        tiers[tier] = curve.operating_point(demand / max(replicas[tier], 1)) if demand > 0 else \
            curve.operating_point(0.0)
    feasible = all(op is not None for op in tiers.values())
    p95 = {}
    for d, _ in _shares(mix):
        if not feasible:
            p95[d.policy] = math.inf
            continue
        p95[d.policy] = sum(d.generated.get(t, 0.0) * tiers[t].s_per_token_p95 for t in curves) + \
            d.switches * overhead_s
    return Prediction(rate_rps, feasible, tiers, p95)


def saturation_rate(mix: Sequence[PolicyDemand], curves: Mapping[str, TierCurve],
                    replicas: Mapping[str, int]) -> float:
    """Requests/s at which the first tier reaches the top of its curve."""
    rates = [curve.max_tokens_per_s_per_replica * replicas[t] / work_per_request(mix, curve)
             for t, curve in curves.items() if work_per_request(mix, curve) > 0]
    return min(rates) if rates else math.inf


def max_rate_at_slo(mix: Sequence[PolicyDemand], curves: Mapping[str, TierCurve], replicas: Mapping[str, int],
                    overhead_s: float, slo_p95_s: float) -> float:
    """Highest requests/s at which every policy's predicted p95 meets the SLO (0: never)."""
    top = saturation_rate(mix, curves, replicas)
    if not math.isfinite(top):
        raise ValueError("the mix generates no tokens")

    def ok(rate: float) -> bool:
        p = predict(rate, mix, curves, replicas, overhead_s)
        return p.feasible and p.worst_p95_s <= slo_p95_s

    if not ok(top * 1e-6):
        return 0.0
    if ok(top):
        return top
    lo, hi = top * 1e-6, top
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


@dataclass(frozen=True)
class TierUnits:
    """What one replica of a tier costs: ``per_replica`` units of ``unit`` (GPU or CPU core)."""

    unit: str
    per_replica: float


@dataclass(frozen=True)
class Plan:
    target_rps: float
    planned_rps: float  # target with headroom
    slo_p95_s: float
    replicas: Mapping[str, int]
    units: Mapping[str, float]  # tier -> GPUs (or cores)
    max_rate_rps: float  # what the planned deployment sustains at the SLO
    prediction: Prediction  # at the planned rate

    @property
    def total_units(self) -> float:
        return sum(self.units.values())


def plan(mix: Sequence[PolicyDemand], curves: Mapping[str, TierCurve], units: Mapping[str, TierUnits],
         overhead_s: float, target_rps: float, slo_p95_s: float, headroom: float = 0.2,
         max_replicas: int = 512) -> Plan | None:
    """The cheapest replica counts (fewest units) that meet the SLO at ``target * (1 + headroom)``.

    None when no count up to ``max_replicas`` per tier does (the SLO is below what one
    unloaded request takes, or the search bound is too small).
    """
    planned = target_rps * (1 + headroom)
    tiers = list(curves)
    best: tuple[float, int, dict[str, int]] | None = None

    def ok(replicas: dict[str, int]) -> bool:
        p = predict(planned, mix, curves, replicas, overhead_s)
        return p.feasible and p.worst_p95_s <= slo_p95_s

    large, small = tiers  # two tiers: for each large count, the fewest small replicas
    for n_large in range(1, max_replicas + 1):
        if best is not None and n_large * units[large].per_replica + units[small].per_replica > best[0]:
            break  # more large replicas alone already cost more than the best plan
        if not ok({large: n_large, small: max_replicas}):
            continue
        lo, hi = 1, max_replicas
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if ok({large: n_large, small: mid}) else (mid + 1, hi)
        counts = {large: n_large, small: lo}
        cost = sum(counts[t] * units[t].per_replica for t in tiers)
        key = (cost, sum(counts.values()), counts)
        if best is None or key[:2] < best[:2]:
            best = key
    if best is None:
        return None
    counts = best[2]
    return Plan(target_rps, planned, slo_p95_s, counts, {t: counts[t] * units[t].per_replica for t in tiers},
                max_rate_at_slo(mix, curves, counts, overhead_s, slo_p95_s),
                predict(planned, mix, curves, counts, overhead_s))
