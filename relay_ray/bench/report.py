"""Figures of a bench run: per-tier costs, ideal vs measured relay time, handoff overhead,
prefix-cache share, throughput; as table rows and JSON.

Definitions (all from runs in the same bench invocation, same target, same concurrency):

- ``ms_per_token[tier]``: the lowest per-request decode time per token of the single-tier run
  (tier-side, excluding the first token).
- ``fixed_ms[tier]``: the lowest (client latency - decode time) of the single-tier run: prompt
  prefill, first token, controller and gRPC, paid once per request by any policy.
- ideal relay time of a request = ``fixed_ms[first tier] + (n_first - 1) * ms_per_token[first]
  + n_other * ms_per_token[other]``: the relay with free handoffs whose every token runs at
  the fastest speed its tier reached alone. At concurrency 1 this is a lower bound (up to
  the noise of the fastest request): a relay request must pay one fixed cost and one decode
  step per token, on the same engines and cores. At concurrency > 1 it is not: the relay
  splits the batch between two tiers, so each tier's steps are cheaper than in the
  single-tier run at the same concurrency.
- efficiency = sum of ideal / sum of measured latencies; speedup = mean large-only latency /
  mean latency (every request writes the same number of tokens: EOS is ignored).
- handoff = controller + transport + the receiving tier's queueing + delta prefill (its time to
  first token); its *extra* cost is that minus one decode step of the receiving tier.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

from relay_ray.bench.console import table
from relay_ray.bench.runner import Handoff, Run, Sample


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0 < q < 1) of ``values`` by linear interpolation between order
    statistics (``statistics.quantiles``, inclusive method); NaN when empty."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[round(100 * q) - 1]


@dataclass(frozen=True)
class TierCost:
    """A tier's cost on its own: per-token decode time and the fixed per-request cost, both
    the *lowest* seen over the requests of a single-tier run (so the ideal is a lower bound)."""

    ms_per_token: float
    fixed_ms: float

    @classmethod
    def of(cls, run: Run, large: bool) -> TierCost:
        steps, fixed = [], []
        for s in run.samples:
            rates = s.large_decode_ms_per_token if large else s.small_decode_ms_per_token
            if rates:
                step = statistics.mean(rates)
                steps.append(step)
                fixed.append(s.latency_ms - (s.num_tokens - 1) * step)
        if not steps:
            raise ValueError(f"{run.scenario.label}: no request wrote more than one token on that tier")
        return cls(min(steps), min(fixed))


def ideal_ms(sample: Sample, large: TierCost, small: TierCost) -> float:
    first, other = (large, small) if sample.first_large else (small, large)
    n_first, n_other = ((sample.large_tokens, sample.small_tokens) if sample.first_large
                        else (sample.small_tokens, sample.large_tokens))
    return first.fixed_ms + max(0, n_first - 1) * first.ms_per_token + n_other * other.ms_per_token


@dataclass(frozen=True)
class Row:
    target: str
    scenario: str
    concurrency: int
    num_requests: int
    large_share: float
    large_ms_per_token: float
    small_ms_per_token: float
    ideal_ms: float
    measured_ms: float
    efficiency: float
    speedup: float
    latency_p50_ms: float
    latency_p95_ms: float
    requests_per_s: float
    tokens_per_s: float
    handoffs: int
    handoff_p50_ms: float
    handoff_p95_ms: float
    handoff_into_large_p50_ms: float
    extra_over_decode_p50_ms: float
    controller_p50_ms: float
    transport_p50_ms: float
    queue_p50_ms: float
    delta_prefill_p50_ms: float
    cached_share: float


def summarize(target: str, run: Run, large: TierCost, small: TierCost, baseline: Run) -> Row:
    """``baseline`` is the large-only run at the same concurrency (speedup reference)."""
    s = run.samples
    measured = [x.latency_ms for x in s]
    ideal = [ideal_ms(x, large, small) for x in s]
    hand: list[Handoff] = [h for x in s for h in x.handoffs]
    extra = [h.total_ms - (large.ms_per_token if h.into_large else small.ms_per_token) for h in hand]
    tokens = sum(x.num_tokens for x in s)
    prompt = sum(h.num_prompt_tokens for h in hand)
    return Row(
        target=target, scenario=run.scenario.label, concurrency=run.concurrency, num_requests=len(s),
        large_share=sum(x.large_tokens for x in s) / tokens if tokens else 0.0,
        large_ms_per_token=large.ms_per_token, small_ms_per_token=small.ms_per_token,
        ideal_ms=statistics.mean(ideal), measured_ms=statistics.mean(measured),
        efficiency=sum(ideal) / sum(measured),
        speedup=statistics.mean(x.latency_ms for x in baseline.samples) / statistics.mean(measured),
        latency_p50_ms=percentile(measured, 0.5), latency_p95_ms=percentile(measured, 0.95),
        requests_per_s=len(s) / run.wall_s, tokens_per_s=tokens / run.wall_s,
        handoffs=len(hand),
        handoff_p50_ms=percentile([h.total_ms for h in hand], 0.5),
        handoff_p95_ms=percentile([h.total_ms for h in hand], 0.95),
        handoff_into_large_p50_ms=percentile([h.total_ms for h in hand if h.into_large], 0.5),
        extra_over_decode_p50_ms=percentile(extra, 0.5),
        controller_p50_ms=percentile([h.controller_ms for h in hand], 0.5),
        transport_p50_ms=percentile([h.transport_ms for h in hand], 0.5),
        queue_p50_ms=percentile([h.queue_ms for h in hand], 0.5),
        delta_prefill_p50_ms=percentile([h.prefill_ms for h in hand], 0.5),
        cached_share=sum(h.num_cached_tokens for h in hand) / prompt if prompt else float("nan"),
    )


def _fmt(value: float, digits: int = 1) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"  # NaN: not applicable


def latency_table(rows: list[Row]) -> str:
    header = ["target", "c", "scenario", "large share", "L ms/tok", "S ms/tok", "ideal ms", "measured ms",
              "efficiency", "speedup", "p50 ms", "p95 ms", "req/s", "tok/s"]
    body = [[r.target, str(r.concurrency), r.scenario, f"{r.large_share:.0%}", _fmt(r.large_ms_per_token, 2),
             _fmt(r.small_ms_per_token, 2), _fmt(r.ideal_ms, 0), _fmt(r.measured_ms, 0), _fmt(r.efficiency, 3),
             _fmt(r.speedup, 2) + "x", _fmt(r.latency_p50_ms, 0), _fmt(r.latency_p95_ms, 0),
             _fmt(r.requests_per_s, 3), _fmt(r.tokens_per_s, 1)] for r in rows]
    return table(header, body)


def handoff_table(rows: list[Row]) -> str:
    header = ["target", "c", "scenario", "handoffs", "p50 ms", "p95 ms", "into large p50", "extra p50",
              "controller", "transport", "queue", "delta prefill", "cached"]
    body = [[r.target, str(r.concurrency), r.scenario, str(r.handoffs), _fmt(r.handoff_p50_ms),
             _fmt(r.handoff_p95_ms), _fmt(r.handoff_into_large_p50_ms), _fmt(r.extra_over_decode_p50_ms),
             _fmt(r.controller_p50_ms, 2), _fmt(r.transport_p50_ms, 2), _fmt(r.queue_p50_ms, 2),
             _fmt(r.delta_prefill_p50_ms), f"{_fmt(100 * r.cached_share)}%"] for r in rows if r.handoffs]
    return table(header, body)


def as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


def throughput_table(rows: list[Row], pair: str, peer_suffixes=(" large tp2", " large x2")) -> str:
    """Relay rows of ``pair`` against large-only on the same two cores (the faster of the
    ``pair + suffix`` targets at each concurrency): throughput ratio and p95 latencies."""
    peers: dict[int, Row] = {}
    for r in rows:
        if r.scenario == "large-only" and r.target in {pair + s for s in peer_suffixes}:
            best = peers.get(r.concurrency)
            if best is None or r.tokens_per_s > best.tokens_per_s:
                peers[r.concurrency] = r
    header = ["pair", "c", "relay scenario", "relay tok/s", "large-only peer", "peer tok/s", "ratio",
              "relay p95 ms", "peer p95 ms"]
    body = []
    for r in rows:
        peer = peers.get(r.concurrency)
        if r.target != pair or not r.scenario.startswith("relay") or peer is None:
            continue
        body.append([pair, str(r.concurrency), r.scenario, _fmt(r.tokens_per_s), peer.target[len(pair) + 1:],
                     _fmt(peer.tokens_per_s), _fmt(r.tokens_per_s / peer.tokens_per_s, 2) + "x",
                     _fmt(r.latency_p95_ms, 0), _fmt(peer.latency_p95_ms, 0)])
    return table(header, body) if body else ""
