"""Summaries of an evaluation: the table the papers print, as text, markdown and JSON.

- accuracy: share of items whose extracted answer equals the gold answer;
- large share: large-model tokens / all committed tokens, summed over the items (the papers'
  "large-model utilization" is this ratio; dropped tokens are not counted);
- switches/req: tier changes per request; latency: mean of the controller's per-request time;
- speedup: mean latency of ``large-only`` / mean latency of the run (when it was run);
- agree: share of items whose extracted answer equals ``large-only``'s (answer consistency).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from relay_ray.quality.runner import ItemResult
from relay_ray.quality.runs import PolicyRun

BASELINE = "large-only"


@dataclass(frozen=True)
class Summary:
    label: str
    policy: str
    params: dict
    num_items: int
    accuracy: float
    large_share: float
    switches_per_request: float
    mean_latency_ms: float
    mean_client_ms: float
    mean_tokens: float
    num_errors: int
    speedup: float | None = None
    agreement_with_large: float | None = None


def summarize(run: PolicyRun, params: dict, results: list[ItemResult]) -> Summary:
    n = len(results)
    large = sum(r.large_tokens for r in results)
    total = large + sum(r.small_tokens for r in results)
    mean = (lambda xs: sum(xs) / n) if n else (lambda xs: 0.0)  # noqa: E731
    return Summary(
        label=run.label, policy=run.policy, params=params, num_items=n,
        accuracy=mean([r.correct for r in results]), large_share=large / total if total else 0.0,
        switches_per_request=mean([r.num_switches for r in results]),
        mean_latency_ms=mean([r.latency_ms for r in results]), mean_client_ms=mean([r.client_ms for r in results]),
        mean_tokens=total / n if n else 0.0, num_errors=sum(1 for r in results if r.error),
    )


def with_baseline(summaries: list[Summary], results: dict[str, list[ItemResult]]) -> list[Summary]:
    """Fill speedup and agreement against the first ``large-only`` run, if any."""
    base = next((s for s in summaries if s.policy == BASELINE), None)
    if base is None:
        return summaries
    base_answers = {r.id: r.predicted for r in results[base.label]}
    out = []
    for s in summaries:
        agree = [r.predicted is not None and r.predicted == base_answers.get(r.id) for r in results[s.label]]
        speedup = base.mean_latency_ms / s.mean_latency_ms if s.mean_latency_ms > 0 else None
        out.append(Summary(**{**asdict(s), "speedup": speedup,
                              "agreement_with_large": sum(agree) / len(agree) if agree else None}))
    return out


_COLUMNS = ("policy", "accuracy", "large share", "switches/req", "latency ms", "speedup", "agree w/ large",
            "tokens/req", "errors")


def _row(s: Summary) -> list[str]:
    return [
        s.label, f"{100 * s.accuracy:.1f}%", f"{100 * s.large_share:.1f}%", f"{s.switches_per_request:.1f}",
        f"{s.mean_latency_ms:.0f}", f"{s.speedup:.2f}x" if s.speedup is not None else "n/a",
        f"{100 * s.agreement_with_large:.1f}%" if s.agreement_with_large is not None else "n/a",
        f"{s.mean_tokens:.0f}", str(s.num_errors),
    ]


def text_table(summaries: list[Summary]) -> str:
    rows = [list(_COLUMNS)] + [_row(s) for s in summaries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(summaries: list[Summary]) -> str:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_row(s)) + " |" for s in summaries]
    return "\n".join(lines) + "\n"


def to_json(summaries: list[Summary], results: dict[str, list[ItemResult]], meta: dict) -> dict:
    return {
        "meta": meta,
        "summaries": [asdict(s) for s in summaries],
        "items": {label: [asdict(r) for r in rs] for label, rs in results.items()},
    }
