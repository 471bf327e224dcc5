"""The measurements ``relay-ray plan`` takes on a running relay with Locust: each tier's
capacity curve, the mix's demand at one user, and the mix's measured maximum load at the SLO."""

from __future__ import annotations

import math
from pathlib import Path

from relay_ray.deploy.capacity import CurvePoint, PolicyDemand, TierCurve
from relay_ray.deploy.loadrun import StepStats, run_step_load, step_stats
from relay_ray.errors import RelayInputError

SINGLE_TIER_POLICY = {"large": "large-only", "small": "small-only"}


def mix_text(mix: dict[str, float]) -> str:
    """The mix as Locust's ``policy:weight,...`` argument."""
    return ",".join(f"{p}:{w:g}" for p, w in mix.items())


def measure_curve(address: str, app: str, tier: str, replicas: int, users: list[int], step_s: float,
                  warmup_s: float, max_new_tokens: int, out: Path) -> tuple[TierCurve, list[StepStats]]:
    steps = [(u, step_s) for u in users]
    rows = run_step_load(address, f"{SINGLE_TIER_POLICY[tier]}:1", steps, out / f"curve_{tier}_requests.csv",
                         max_new_tokens, app=app, log=out / "locust.log")
    stats = step_stats(rows, steps, warmup_s)
    points = tuple(CurvePoint(s.users, s.tier_tokens_per_s[tier], s.s_per_token_p95, s.s_per_token_mean,
                              s.latency_requests) for s in stats if s.latency_requests)
    return TierCurve(tier, replicas, points, prefill_per_token(rows, tier)), stats


def prefill_per_token(rows, tier: str) -> float:
    """Uncached prefill tokens per generated token on ``tier`` over the successful rows."""
    ok = [r for r in rows if r.ok]
    generated = sum(getattr(r, f"{tier}_generated") for r in ok)
    return sum(getattr(r, f"{tier}_prefill_tokens") for r in ok) / generated if generated else 0.0


def measure_demand(address: str, app: str, mix: dict[str, float], params: str, seconds: float, warmup_s: float,
                   max_new_tokens: int, out: Path) -> list[PolicyDemand]:
    rows = run_step_load(address, mix_text(mix), [(1, seconds)], out / "demand_requests.csv", max_new_tokens,
                         policy_params=params, app=app, log=out / "locust.log")
    begin = min((r.start_s for r in rows), default=0.0)
    rows = [r for r in rows if r.ok and r.start_s >= begin + warmup_s]
    demand = []
    for policy, weight in mix.items():
        mine = [r for r in rows if r.policy == policy]
        if not mine:
            raise RelayInputError("demand", f"no successful {policy} request in {seconds:g} s: run longer")
        mean = lambda f: sum(f(r) for r in mine) / len(mine)  # noqa: E731
        demand.append(PolicyDemand(
            policy, weight,
            generated={"large": mean(lambda r: r.large_generated), "small": mean(lambda r: r.small_generated)},
            prefill={"large": mean(lambda r: r.large_prefill_tokens), "small": mean(lambda r: r.small_prefill_tokens)},
            switches=mean(lambda r: r.switches), latency_s=mean(lambda r: r.latency_s), requests=len(mine)))
    return demand


def measured_max_at_slo(stats: list[StepStats], slo_p95_s: float) -> tuple[float, str]:
    """(requests/s where the worst policy's p95 crosses the SLO, how it was found)."""
    ordered = sorted(stats, key=lambda s: s.users)
    worst = [max(s.policy_p95_s.values()) if s.policy_p95_s else math.inf for s in ordered]
    if not ordered or worst[0] > slo_p95_s:
        return 0.0, "the lightest step already misses the SLO"
    for i in range(1, len(ordered)):
        if worst[i] > slo_p95_s:
            a, b = ordered[i - 1], ordered[i]
            f = (slo_p95_s - worst[i - 1]) / (worst[i] - worst[i - 1])
            rate = a.requests_per_s + f * max(b.requests_per_s - a.requests_per_s, 0.0)
            return rate, f"interpolated between {a.users} and {b.users} users"
    return ordered[-1].requests_per_s, f"lower bound: {ordered[-1].users} users still meet the SLO"
