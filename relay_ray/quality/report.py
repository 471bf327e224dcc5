"""Summaries of an evaluation: the table the papers print, with intervals and paired tests.

- accuracy: share of items whose extracted answer equals the gold answer, with its 95% Wilson
  interval (:mod:`relay_ray.quality.stats`);
- p vs large: exact McNemar p-value of the run against ``large-only`` on the same items;
- large share: large-model tokens / all committed tokens, summed over the items (the papers'
  "large-model utilization"; dropped tokens are not counted);
- compute share: large-tier token positions computed (prefill + decode) / large-only's
  (:mod:`relay_ray.quality.compute`);
- switches/req: tier changes per request; latency: mean of the controller's per-request time;
- speedup: mean latency of ``large-only`` / mean latency of the run (when it was run);
- agree: share of items whose extracted answer equals ``large-only``'s (answer consistency).
"""

from __future__ import annotations

import statistics

from pydantic import BaseModel, ConfigDict

from relay_ray.bench.console import table
from relay_ray.quality.compute import compute_share, time_share
from relay_ray.quality.runner import ItemResult
from relay_ray.quality.runs import PolicyRun
from relay_ray.quality.stats import paired, wilson

BASELINE = "large-only"


class Summary(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    policy: str
    params: dict
    num_items: int
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    large_share: float
    switches_per_request: float
    large_segments_per_request: float
    mean_latency_ms: float
    mean_client_ms: float
    p95_client_ms: float
    mean_tokens: float
    num_errors: int
    wall_s: float | None = None
    speedup: float | None = None
    agreement_with_large: float | None = None
    large_compute_share: float | None = None
    large_time_share: float | None = None
    mcnemar_p: float | None = None
    only_run_right: int | None = None  # items right in this run and wrong in large-only
    only_large_right: int | None = None

    @property
    def requests_per_s(self) -> float | None:
        return self.num_items / self.wall_s if self.wall_s else None

    @property
    def tokens_per_s(self) -> float | None:
        return self.num_items * self.mean_tokens / self.wall_s if self.wall_s else None


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def summarize(run: PolicyRun, params: dict, results: list[ItemResult], wall_s: float | None = None) -> Summary:
    n = len(results)
    large = sum(r.large_tokens for r in results)
    total = large + sum(r.small_tokens for r in results)
    right = sum(r.correct for r in results)
    low, high = wilson(right, n)
    client = [r.client_ms for r in results if not r.error]
    return Summary(
        label=run.label, policy=run.policy, params=params, num_items=n,
        accuracy=right / n if n else 0.0, accuracy_low=low, accuracy_high=high,
        large_share=large / total if total else 0.0,
        switches_per_request=_mean([r.num_switches for r in results]),
        large_segments_per_request=_mean([r.large_segments for r in results]),
        mean_latency_ms=_mean([r.latency_ms for r in results]), mean_client_ms=_mean(client),
        p95_client_ms=statistics.quantiles(client, n=20, method="inclusive")[-1] if len(client) > 1
        else _mean(client),
        mean_tokens=total / n if n else 0.0, num_errors=sum(1 for r in results if r.error), wall_s=wall_s,
    )


def against(summary: Summary, results: list[ItemResult], base: Summary, base_results: list[ItemResult]) -> Summary:
    """``summary`` with speedup, agreement, compute share and McNemar against ``base``
    (matched by item id; items only one run answered are left out of the paired figures)."""
    base_by_id = {r.id: r for r in base_results}
    common = [r for r in results if r.id in base_by_id]
    test = paired([r.correct for r in common], [base_by_id[r.id].correct for r in common])
    agree = [r.predicted is not None and r.predicted == base_by_id[r.id].predicted for r in common]
    return summary.model_copy(update={
        "speedup": base.mean_latency_ms / summary.mean_latency_ms if summary.mean_latency_ms > 0 else None,
        "agreement_with_large": sum(agree) / len(agree) if agree else None,
        "large_compute_share": compute_share(results, base_results),
        "large_time_share": time_share(results, base_results),
        "mcnemar_p": test.p_value, "only_run_right": test.only_run, "only_large_right": test.only_reference,
    })


def with_baseline(summaries: list[Summary], results: dict[str, list[ItemResult]]) -> list[Summary]:
    """Every summary against the first ``large-only`` run, if there is one."""
    base = next((s for s in summaries if s.policy == BASELINE), None)
    if base is None:
        return summaries
    return [against(s, results[s.label], base, results[base.label]) for s in summaries]


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


COLUMNS = ("policy", "accuracy", "95% CI", "p vs large", "large share", "compute share", "switches/req",
           "latency ms", "speedup", "agree w/ large", "tokens/req", "errors")


def row(s: Summary) -> list[str]:
    return [
        s.label, fmt_pct(s.accuracy), f"{100 * s.accuracy_low:.1f}-{100 * s.accuracy_high:.1f}",
        fmt_p(s.mcnemar_p), fmt_pct(s.large_share), fmt_pct(s.large_compute_share),
        f"{s.switches_per_request:.1f}", f"{s.mean_latency_ms:.0f}",
        f"{s.speedup:.2f}x" if s.speedup is not None else "n/a", fmt_pct(s.agreement_with_large),
        f"{s.mean_tokens:.0f}", str(s.num_errors),
    ]


def text_table(summaries: list[Summary]) -> str:
    return table(COLUMNS, [row(s) for s in summaries], markdown=False, right=range(1, len(COLUMNS)))


def markdown_table(summaries: list[Summary]) -> str:
    return table(COLUMNS, [row(s) for s in summaries]) + "\n"


def to_json(summaries: list[Summary], results: dict[str, list[ItemResult]], meta: dict) -> dict:
    return {
        "meta": meta,
        "summaries": [s.model_dump() for s in summaries],
        "items": {label: [r.model_dump() for r in rs] for label, rs in results.items()},
    }
