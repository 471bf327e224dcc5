"""Tables, decisions and the Pareto plot of a matrix run (:mod:`relay_ray.quality.matrix_run`).

Every figure is derived from ``results.json`` (so a report can be re-rendered without
re-running): accuracy and its interval, the paired test and the compute share against the
``large-only`` full pass; latency, efficiency and handoffs from the concurrency-1 passes;
throughput and p95 from the concurrency-16 passes. Definitions: :mod:`relay_ray.quality.report`
and :mod:`relay_ray.quality.compute`.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay_ray.bench.console import table
from relay_ray.quality.compute import TierCost, efficiency, handoffs_into_large
from relay_ray.quality.matrix import COST_FROM, KV, LARGE_X2, SCALED, SPEC, Decisions, Entry, Group
from relay_ray.quality.matrix_run import EntryResult, MatrixResults, Pass
from relay_ray.quality.report import Summary, against, fmt_p, fmt_pct, summarize
from relay_ray.quality.runs import PolicyRun

BASELINE = "large-only"


@dataclass(frozen=True)
class Row:
    """Everything the tables and the plot show about one entry."""

    entry: Entry
    full: Summary | None  # concurrency-16 pass, against large-only
    latency: Summary | None  # concurrency-1 pass, against large-only's latency pass
    efficiency: float | None
    into_large_per_request: float | None
    into_large_p50_ms: float | None
    into_large_p50_steps: float | None
    into_large_uncached_p50: float | None = None
    into_large_engine_step_p50_ms: float | None = None


def _summary(record: EntryResult, which: str) -> Summary | None:
    p: Pass | None = getattr(record, which)
    if p is None:
        return None
    return summarize(PolicyRun(record.entry.label, record.entry.policy), p.params, p.results, p.wall_s)


def tier_costs(results: MatrixResults) -> dict[str, tuple[TierCost | None, TierCost | None]]:
    """Per deployment, (large, small) costs from its large-only and small-only latency passes."""
    costs: dict[str, list] = {}
    for r in results.entries.values():
        e = r.entry
        if e.policy in ("large-only", "small-only") and r.latency is not None:
            try:
                cost = TierCost.of(r.latency.results)
            except ValueError:
                continue
            costs.setdefault(e.deployment, [None, None])[0 if e.policy == "large-only" else 1] = cost
    return {k: (v[0], v[1]) for k, v in costs.items()}


def rows(results: MatrixResults) -> list[Row]:
    base = results.entries.get(BASELINE)
    base_full, base_lat = (_summary(base, "full"), _summary(base, "latency")) if base else (None, None)
    costs = tier_costs(results)
    out = []
    for r in results.entries.values():
        full, lat = _summary(r, "full"), _summary(r, "latency")
        if full is not None and base_full is not None:
            full = against(full, r.full.results, base_full, base.full.results)
        if lat is not None and base_lat is not None:
            lat = against(lat, r.latency.results, base_lat, base.latency.results)
        large, small = costs.get(r.entry.deployment, (None, None))
        large_from, small_from = COST_FROM.get(r.entry.deployment, (SCALED, SCALED))
        large = large or costs.get(large_from, (None, None))[0] or costs.get(SCALED, (None, None))[0]
        small = small or costs.get(small_from, (None, None))[1] or costs.get(SCALED, (None, None))[1]
        eff = hand = None
        if r.latency is not None and large is not None and small is not None:
            eff = efficiency(r.latency.results, large, small)
        if r.latency is not None:
            hand = handoffs_into_large(r.latency.results, large)
        out.append(Row(r.entry, full, lat, eff, hand.into_large_per_request if hand else None,
                       hand.into_large_p50_ms if hand else None, hand.into_large_p50_steps if hand else None,
                       hand.into_large_uncached_p50 if hand else None,
                       hand.into_large_engine_step_p50_ms if hand else None))
    return out


def fmt_num(x: float | None, fmt: str = "{:.0f}", none: str = "—") -> str:
    return none if x is None else fmt.format(x)


def _throughput_vs(row: Row, peer: Row | None) -> str:
    if row.full is None or peer is None or peer.full is None or not peer.full.requests_per_s:
        return "—"
    return f"{row.full.requests_per_s / peer.full.requests_per_s:.2f}x"


MAIN_COLUMNS = ("policy", "deployment", "accuracy", "95% CI", "p vs large", "large tokens", "large compute",
                "large time", "switches/req", "c=1 ms", "c=1 speedup", "efficiency", "into-large p50 ms (steps)",
                "c=16 req/s", "c=16 vs large-only", "c=16 vs large x2", "c=16 p95 ms")


def large_compute(r: Row, spec_compute: dict[str, float]) -> float | None:
    """The row's large compute share as the tables and the plot show it (None: not measured)."""
    if r.entry.deployment == KV:  # the session feeds' prefill is computed but no response reports it
        return None
    return spec_compute.get(r.entry.label, r.full.large_compute_share)


def main_table(all_rows: list[Row], spec_compute: dict[str, float] | None = None) -> str:
    by_label = {r.entry.label: r for r in all_rows}
    base, x2 = by_label.get(BASELINE), next((r for r in all_rows if r.entry.deployment == LARGE_X2), None)
    body = []
    for r in all_rows:
        if r.entry.group not in (Group.MAIN, Group.PEER) or r.full is None:
            continue
        f, lat = r.full, r.latency
        compute = large_compute(r, spec_compute or {})
        hand = "—" if r.into_large_p50_ms is None else (
            f"{r.into_large_p50_ms:.0f} ({r.into_large_p50_steps:.1f})" if r.into_large_p50_steps else
            f"{r.into_large_p50_ms:.0f}")
        body.append([
            r.entry.label, r.entry.deployment, fmt_pct(f.accuracy), f"{100 * f.accuracy_low:.1f}-"
            f"{100 * f.accuracy_high:.1f}", fmt_p(f.mcnemar_p), fmt_pct(f.large_share), fmt_pct(compute),
            fmt_pct(lat.large_time_share if lat else None), f"{f.switches_per_request:.1f}", fmt_num(lat.mean_client_ms if lat else None),
            fmt_num(base.latency.mean_client_ms / lat.mean_client_ms if lat and base and base.latency else None,
                 "{:.2f}x"), fmt_num(r.efficiency, "{:.2f}"), hand,
            fmt_num(f.requests_per_s, "{:.2f}"), _throughput_vs(r, base), _throughput_vs(r, x2),
            fmt_num(f.p95_client_ms)])
    return table(MAIN_COLUMNS, body)


SWEEP_COLUMNS = ("curve", "point", "accuracy", "95% CI", "p vs large", "large tokens", "large compute",
                 "switches/req", "c=1 ms", "efficiency")


def sweep_table(all_rows: list[Row]) -> str:
    """The curves' points, and the dev stage's relayllm call floors."""
    floors = [r for r in all_rows if r.full is not None and r.entry.call_floor is not None]
    body = []
    for r in sorted(curve_rows(all_rows) + floors, key=lambda r: (
            r.entry.policy, r.entry.tau or 0.0, r.entry.call_floor or 0, -(r.full.large_compute_share or 0.0))):
        f = r.full
        point = (f"tau={r.entry.tau}" if r.entry.tau is not None else
                 f"floor={r.entry.call_floor}" if r.entry.call_floor is not None else r.entry.cue_set)
        body.append([f"{r.entry.policy}{' (chosen)' if r.entry.group is Group.MAIN else ''}", point,
                     fmt_pct(f.accuracy), f"{100 * f.accuracy_low:.1f}-{100 * f.accuracy_high:.1f}",
                     fmt_p(f.mcnemar_p), fmt_pct(f.large_share), fmt_pct(f.large_compute_share),
                     f"{f.switches_per_request:.1f}", fmt_num(r.latency.mean_client_ms if r.latency else None),
                     fmt_num(r.efficiency, "{:.2f}")])
    return table(SWEEP_COLUMNS, body)


def curve_rows(all_rows: list[Row]) -> list[Row]:
    """Rows on the tau-sweep and cue-set curves (the chosen main rows included), on the
    plain scaled deployment."""
    return [r for r in all_rows if r.full is not None and r.entry.deployment == SCALED
            and (r.entry.tau is not None or r.entry.cue_set is not None)]


def _speedup(row: Row | None, base: Row | None) -> float | None:
    if row is None or base is None or row.latency is None or base.latency is None:
        return None
    return base.latency.mean_client_ms / row.latency.mean_client_ms


def _throughput(row: Row | None, peer: Row | None) -> float | None:
    if row is None or peer is None or row.full is None or peer.full is None or not peer.full.requests_per_s:
        return None
    return row.full.requests_per_s / peer.full.requests_per_s


def _check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _ge(x: float | None, bound: float) -> bool | None:
    return None if x is None else x >= bound


def _low_switch_targets(r: Row, base: Row, x2: Row | None) -> list[list[str]]:
    """rstitch / relayllm: within a point, not significantly below, >= 6x at c=1, >= 3x at c=16, eff >= 0.6."""
    f, b = r.full, base.full
    close = f.accuracy >= b.accuracy - 0.01 and not (f.accuracy < b.accuracy and (f.mcnemar_p or 1) <= 0.05)
    sp, tp, tp2 = _speedup(r, base), _throughput(r, base), _throughput(r, x2)
    name = r.entry.label
    return [[f"{name}: accuracy within 1 point of large-only, McNemar p > 0.05",
             f"{100 * f.accuracy:.1f}% vs {100 * b.accuracy:.1f}%, p {fmt_p(f.mcnemar_p)}", _check(close)],
            [f"{name}: >= 6x large-only's c=1 latency (aim 10x)", fmt_num(sp, "{:.2f}x"), _check(_ge(sp, 6.0))],
            [f"{name}: >= 3x throughput at c=16 (vs large-only on both cores / on one)",
             f"{fmt_num(tp2, '{:.2f}x')} / {fmt_num(tp, '{:.2f}x')}", _check(_ge(tp2, 3.0))],
            [f"{name}: efficiency >= 0.6 at c=1 (aim 0.85)", fmt_num(r.efficiency, "{:.2f}"), _check(_ge(r.efficiency, 0.6))]]


def targets_table(all_rows: list[Row]) -> str:
    """The issue's targets that the matrix measures (the fixed-ratio ones are `relay-ray bench`'s)."""
    by = {r.entry.label: r for r in all_rows}
    base, x2, spec = by.get(BASELINE), by.get("large-only x2"), by.get("spec decoding")
    if base is None or base.full is None:
        return ""
    body = []
    for name in ("rstitch", "relayllm"):
        if name in by and by[name].full is not None:
            body += _low_switch_targets(by[name], base, x2)
    gen = by.get("relaygen")
    if gen is not None and gen.full is not None:
        sp = _speedup(gen, base)
        body += [["relaygen: >= 99% of large-only's accuracy", f"{100 * gen.full.accuracy / base.full.accuracy:.1f}%",
                  _check(gen.full.accuracy >= 0.99 * base.full.accuracy)],
                 ["relaygen: >= 1.15x at c=1", fmt_num(sp, "{:.2f}x"), _check(_ge(sp, 1.15))],
                 ["relaygen: efficiency >= 0.85 at c=1", fmt_num(gen.efficiency, "{:.2f}"), _check(_ge(gen.efficiency, 0.85))]]
    for r in all_rows:
        if r.entry.group is not Group.MAIN or r.entry.policy not in ("rstitch", "relaygen", "relayllm"):
            continue
        if spec is not None:
            faster = _speedup(r, spec)
            body.append([f"{r.entry.label} faster than speculative decoding alone (c=1)", fmt_num(faster, "{:.2f}x"),
                         _check(_ge(faster, 1.0))])
        if r.into_large_p50_steps is not None:
            body.append([f"{r.entry.label}: handoff into the large tier p50 <= 1.5 decode steps",
                         f"{r.into_large_p50_steps:.1f}", _check(r.into_large_p50_steps <= 1.5)])
    return table(("target", "measured", "met?"), body)


def _acceptable(row: Row, base: Summary, min_accuracy: float) -> bool:
    f = row.full
    significantly_below = f.accuracy < base.accuracy and (f.mcnemar_p or 1.0) <= 0.05
    return f.accuracy >= min_accuracy - 1e-12 and not significantly_below


_CHEAPEST = ("lowest large compute share with accuracy >= large-only - 1 point and not significantly below "
             "large-only (exact McNemar p <= 0.05)")
RULES = {"rstitch_tau": f"{_CHEAPEST}; ties: larger tau",
         "relaygen_cue_set": "the cues `relay-ray calibrate relaygen` selected on the calibration split "
                             "(demo-models/relaygen-cues.json), not re-chosen",
         "relayllm_min_call_tokens": f"{_CHEAPEST}; ties: smaller floor; if no floor meets it, the most accurate "
                                     "(ties: smaller floor)"}


def decide(results: MatrixResults, split: str, cue_set: str = "calibrated",
           previous: Decisions | None = None) -> Decisions:
    """The dev stage's choices by the fixed rules in :data:`RULES`: the cheapest (large compute
    share) tau, and the cheapest relayllm call floor, whose accuracy is within a point of
    large-only's and not significantly below it.

    A run with no tau (or no floor) rows keeps ``previous``'s choice and its evidence, so a dev
    run of one group (``--only``) decides only that group."""
    all_rows = rows(results)
    base = next(r.full for r in all_rows if r.entry.label == BASELINE)
    evidence = {r.entry.label: {"accuracy": r.full.accuracy, "mcnemar_p": r.full.mcnemar_p,
                                "large_share": r.full.large_share, "large_compute_share": r.full.large_compute_share,
                                "switches_per_request": r.full.switches_per_request}
                for r in all_rows if r.full is not None}
    kept = dict(previous.evidence.get("runs", {})) if previous is not None else {}
    taus = [r for r in all_rows if r.entry.tau is not None]
    if taus:
        ok = [r for r in taus if _acceptable(r, base, base.accuracy - 0.01)]
        if not ok:
            raise ValueError("no tau meets the rule on this split; widen the sweep")
        tau = min(ok, key=lambda r: (r.full.large_compute_share, -r.entry.tau)).entry.tau
    elif previous is not None:
        tau = previous.rstitch_tau
        evidence |= {k: v for k, v in kept.items() if k.startswith("rstitch tau=")}
    else:
        raise ValueError("no rstitch tau runs in this run and no earlier decisions to keep")
    floors = [r for r in all_rows if r.entry.call_floor is not None]
    if floors:
        ok = [r for r in floors if _acceptable(r, base, base.accuracy - 0.01)]
        floor = (min(ok, key=lambda r: (r.full.large_compute_share, r.entry.call_floor)) if ok else
                 max(floors, key=lambda r: (r.full.accuracy, -r.entry.call_floor))).entry.call_floor
    else:
        floor = previous.relayllm_min_call_tokens if previous is not None else 1
        evidence |= {k: v for k, v in kept.items() if k.startswith("relayllm floor=")}
    return Decisions(split=split, rstitch_tau=tau, relaygen_cue_set=cue_set, relayllm_min_call_tokens=floor,
                     rules=RULES, evidence={"large_only_accuracy": base.accuracy, "num_items": base.num_items,
                                            "runs": evidence})


def spec_compute_shares(results: MatrixResults, small_model: str, k: int) -> dict[str, float]:
    """Large compute share of the speculative-decoding rows (large-only on a speculative
    deployment): ``k + 1`` large positions per verification step, counted from each item's
    greedy trace and the draft model's greedy predictions on it (:mod:`relay_ray.quality.compute`)."""
    from relay_ray.quality.compute import large_computed_tokens, speculative_large_positions
    from relay_ray.quality.margins import MarginScorer

    from relay_ray.quality.dataset import load_dataset

    base = results.entries.get(BASELINE)
    if base is None or base.full is None:
        return {}
    prompts = {i.id: i.prompt for i in load_dataset(results.meta["data"])[0]}
    scorer = MarginScorer(small_model)
    ref = sum(large_computed_tokens(r) for r in base.full.results if not r.error)
    out = {}
    for label, record in results.entries.items():
        if record.entry.policy != "large-only" or record.entry.deployment not in (SPEC,) or record.full is None:
            continue
        total = 0
        for r in record.full.results:
            if r.error or not r.segments:
                continue
            s = r.segments[0]
            matches = scorer.draft_matches(prompts[r.id], r.text, r.token_ids)
            total += max(0, s.num_prompt_tokens - s.num_cached_tokens) + speculative_large_positions(matches, k)
        out[label] = total / ref if ref else None
    return out
