"""The capacity plan's report: ``plan.md`` plus two PNG plots (matplotlib, Agg backend).

- ``curves.png``: per tier, generated tokens/s and p95 seconds per token against users;
- ``replicas.png``: replicas per tier (and GPUs or cores) the plan needs against target load.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from relay_ray.deploy.capacity import TIERS, Plan, TierUnits, plan, predict, tokens_per_request
from relay_ray.deploy.loadrun import StepStats
from relay_ray.deploy.measurements import Measurements


@dataclass
class Report:
    args: dict
    measurements: Measurements
    replicas: dict[str, int]
    units: dict[str, TierUnits]
    predicted_max_rps: float
    plan: Plan | None = None
    curve_stats: dict[str, list[StepStats]] = field(default_factory=dict)
    validation: list[StepStats] = field(default_factory=list)
    measured: tuple[float, str] | None = None


def _f(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def curve_table(m: Measurements) -> str:
    rows = []
    for tier in TIERS:
        c = m.curves[tier]
        for p in c.points:
            rows.append([tier, f"{c.replicas}", f"{p.users:g}", _f(p.tokens_per_s, 1),
                         _f(1000 * p.s_per_token_mean, 1), _f(1000 * p.s_per_token_p95, 1), f"{p.requests}"])
    return _table(["tier", "replicas", "users", "tokens/s", "ms/token mean", "ms/token p95", "requests"], rows)


def demand_table(m: Measurements) -> str:
    total = sum(d.weight for d in m.demand)
    rows = [[d.policy, f"{d.weight / total:.2f}", _f(d.generated.get("large", 0), 1), _f(d.generated.get("small", 0), 1),
             _f(d.prefill.get("large", 0), 1), _f(d.prefill.get("small", 0), 1), _f(d.switches, 2),
             _f(d.latency_s, 2), f"{d.requests}"] for d in m.demand]
    rows.append(["**mix**", "1.00", _f(tokens_per_request(m.demand, "large"), 1),
                 _f(tokens_per_request(m.demand, "small"), 1), "", "", "", "", ""])
    return _table(["policy", "share", "large tokens", "small tokens", "large prefill", "small prefill", "switches",
                   "latency at 1 user (s)", "requests"], rows)


def validation_table(stats: list[StepStats], slo: float) -> str:
    policies = sorted({p for s in stats for p in s.policy_p95_s})
    rows = []
    for s in stats:
        worst = max(s.policy_p95_s.values()) if s.policy_p95_s else math.nan
        rows.append([f"{s.users}", _f(s.requests_per_s, 3), _f(s.tokens_per_s, 1), f"{s.latency_requests}",
                     *[_f(s.policy_p95_s.get(p, math.nan), 2) for p in policies],
                     "yes" if worst <= slo else "no", f"{s.failed}"])
    return _table(["users", "req/s", "tokens/s", "timed requests", *[f"p95 {p} (s)" for p in policies],
                   f"p95 <= {slo:g} s", "failed"], rows)


def plan_table(p: Plan, units: dict[str, TierUnits]) -> str:
    rows = []
    for tier in TIERS:
        op = p.prediction.tiers.get(tier)
        rows.append([tier, f"{p.replicas[tier]}", f"{units[tier].per_replica:g} {units[tier].unit}",
                     f"{p.units[tier]:g}", f"{math.ceil(p.units[tier] - 1e-9)}",
                     _f(100 * op.utilization, 0) + "%" if op else "-"])
    unit = "/".join(sorted({units[t].unit for t in TIERS}))
    whole = sum(math.ceil(p.units[t] - 1e-9) for t in TIERS)
    rows.append(["**total**", f"{sum(p.replicas.values())}", "", f"{p.total_units:g} {unit}", f"**{whole} {unit}**", ""])
    return _table(["tier", "replicas", "per replica", "total", "whole units", "utilization at planned load"], rows)


def markdown(r: Report) -> str:
    m, a = r.measurements, r.args
    slo = a["slo_p95_s"]
    out = ["# Capacity plan", ""]
    ctx = m.context
    params = {p: v for p, v in json.loads(a.get("policy_params") or "{}").items() if p in {d.policy for d in m.demand}}
    out += [f"- config: `{a['config']}`; deployed replicas: large {r.replicas['large']}, small {r.replicas['small']}",
            f"- mix: `{a['mix']}`" + (f" (parameters `{json.dumps(params)}`)" if params else "")
            + f"; {m.max_new_tokens} output tokens per request (EOS ignored)",
            f"- SLO: p95 latency <= {slo:g} s for every policy of the mix"]
    for key in ("large", "small", "demand"):
        if key in m.source:
            out.append(f"- {key}: {m.source[key]}")
    if ctx.get("measured_at"):
        out.append(f"- measured {ctx['measured_at']} on {ctx.get('machine', '?')}")
    out += ["", "## Capacity curves (each tier alone)", "", curve_table(m), "",
            "![throughput and p95 per token against users](curves.png)", "",
            "## Demand per request", "", demand_table(m), "",
            f"Switch overhead (latency per switch beyond the tiers' token times, at one user): "
            f"{1000 * m.overhead_s:.1f} ms.", "",
            "## Prediction for the deployed replicas", "",
            f"Predicted maximum load at the SLO: **{r.predicted_max_rps:.3f} requests/s**."]
    if r.predicted_max_rps > 0:
        p = predict(r.predicted_max_rps, m.demand, m.curves, r.replicas, m.overhead_s)
        out.append("At that load: " + "; ".join(
            f"{t} at {100 * op.utilization:.0f}% of its curve's top" for t, op in p.tiers.items() if op)
            + "; predicted p95: " + ", ".join(f"{k} {v:.2f} s" for k, v in p.p95_s.items()) + ".")
    if r.plan is not None:
        pl = r.plan
        out += ["", f"## Plan for {pl.target_rps:g} requests/s (+{100 * a['headroom']:.0f}% headroom: "
                f"{pl.planned_rps:g} requests/s)", "", plan_table(pl, r.units), "",
                f"The planned deployment's maximum load at the SLO: {pl.max_rate_rps:.3f} requests/s.",
                "", "![replicas needed against target load](replicas.png)"]
    elif a.get("target_rps"):
        out += ["", f"## Plan for {a['target_rps']:g} requests/s", "",
                "No replica count meets the SLO (a single unloaded request already takes longer)."]
    if r.validation:
        measured, how = r.measured
        err = (measured / r.predicted_max_rps - 1) if r.predicted_max_rps else math.nan
        out += ["", "## Validation: the mix under step load on the same deployment", "",
                validation_table(r.validation, slo), "",
                f"Measured maximum load at the SLO: **{measured:.3f} requests/s** ({how}); predicted "
                f"{r.predicted_max_rps:.3f}: measured/predicted - 1 = **{100 * err:+.1f}%**."]
    return "\n".join(out) + "\n"


def _plot_curves(m: Measurements, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TIERS), figsize=(5 * len(TIERS), 3.6))
    for ax, tier in zip(axes, TIERS):
        c = m.curves[tier]
        users = [p.users for p in c.points]
        ax.plot(users, [p.tokens_per_s for p in c.points], "o-", color="tab:blue", label="tokens/s")
        ax.set_xlabel("concurrent users")
        ax.set_ylabel("generated tokens/s", color="tab:blue")
        ax.set_title(f"{tier} tier ({c.replicas} replica{'s' if c.replicas > 1 else ''})")
        ax2 = ax.twinx()
        ax2.plot(users, [1000 * p.s_per_token_p95 for p in c.points], "s--", color="tab:red", label="p95 ms/token")
        ax2.set_ylabel("p95 latency per token (ms)", color="tab:red")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_replicas(r: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, a = r.measurements, r.args
    base = r.plan.target_rps if r.plan else max(r.predicted_max_rps, 1e-3)
    targets = [base * f for f in (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8)]
    rows = [(t, plan(m.demand, m.curves, r.units, m.overhead_s, t, a["slo_p95_s"], a["headroom"])) for t in targets]
    rows = [(t, p) for t, p in rows if p is not None]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    if rows:
        xs = [t for t, _ in rows]
        for tier, style in zip(TIERS, ("o-", "s-")):
            ax.plot(xs, [p.replicas[tier] for _, p in rows], style, label=f"{tier} replicas")
        unit = "/".join(sorted({u.unit for u in r.units.values()}))
        ax.plot(xs, [p.total_units for _, p in rows], "k^--", label=f"{unit}s in total")
    ax.set_xlabel("target load (requests/s)")
    ax.set_ylabel("replicas / units")
    ax.set_title(f"plan at p95 <= {a['slo_p95_s']:g} s, +{100 * a['headroom']:.0f}% headroom")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: Report, out: Path) -> None:
    (out / "plan.md").write_text(markdown(report))
    _plot_curves(report.measurements, out / "curves.png")
    _plot_replicas(report, out / "replicas.png")
