"""``relay-ray calibrate relaygen|rstitch``: calibrate a policy on a dataset through a running relay.

- ``relaygen``: the large model answers the calibration split (large-only, over gRPC); the
  small model (``--small-model``, a Hugging Face folder) is teacher-forced over those traces;
  cues are selected by the rule in :mod:`relay_ray.quality.calibrate` and written to a cue
  file (``relaygen:cues_file=...`` in ``relay-ray eval``, ``--cues-file`` in ``generate``).
- ``rstitch``: runs large-only and rstitch at every ``--taus`` value, prints the accuracy /
  large-share frontier and recommends a tau.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from relay_ray.errors import RelayInputError

# Near-certainty on every token of the handed-over sentence. On the demo pair the sentences
# after easy cues score >= 0.997 and those after hard cues <= 0.89 (docs/quality.md); 0.5
# let the hard ones through, because a small model is confidently wrong on a few digits.
DEFAULT_MIN_MARGIN = 0.95
DEFAULT_TAUS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("method", choices=["relaygen", "rstitch"])
    p.add_argument("--data", default="data/arith/calibration.jsonl", help="JSONL dataset (id, prompt, answer)")
    p.add_argument("--address", default="127.0.0.1:9000", help="host:port of Serve's gRPC proxy")
    p.add_argument("--app", default=None, help="Serve application name (when several run)")
    p.add_argument("--answer-format", default="answer-line", help="answer-line, boxed or regex:PATTERN")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    p.add_argument("--out", default=None, help="output file (relaygen: cue file; rstitch: JSON report)")
    g = p.add_argument_group("relaygen")
    g.add_argument("--small-model", default="demo-models/arith-small", help="small model folder (HF format)")
    g.add_argument("--candidates", nargs="+", default=None,
                   help="candidate cues (default: the Qwen3 list + the arithmetic task's cues and copy phrases)")
    g.add_argument("--min-count", type=int, default=3, help="occurrences a cue needs to be judged")
    g.add_argument("--min-margin", type=float, default=DEFAULT_MIN_MARGIN,
                   help="mean lowest top1-top2 margin to select a cue")
    g = p.add_argument_group("rstitch")
    g.add_argument("--taus", nargs="+", type=float, default=list(DEFAULT_TAUS))
    g.add_argument("--target", type=float, default=0.97, help="accuracy to keep, as a fraction of large-only's")


def _large_only(client, items, fmt, args, label="large-only"):
    from relay_ray.quality.report import summarize
    from relay_ray.quality.runner import run_items
    from relay_ray.quality.runs import PolicyRun

    run = PolicyRun(label, "large-only")
    results = run_items(client, items, run, {}, fmt, args.max_new_tokens, args.concurrency, keep_text=True)
    return results, summarize(run, {}, results)


def calibrate_relaygen(client, items, fmt, args) -> dict:
    from relay_ray.policies.relaygen import QWEN3_CUES, SENTENCE_ENDS
    from relay_ray.quality.calibrate import cue_table
    from relay_ray.bench.console import progress, table
    from relay_ray.quality.margins import MarginScorer
    from relay_ray.tasks.arith import COPY_PHRASES, EASY_CUES, HARD_CUES

    results, summary = _large_only(client, items, fmt, args)
    if not Path(args.small_model).is_dir():
        raise RelayInputError("--small-model", f"model folder not found: {args.small_model}")
    scorer = MarginScorer(args.small_model)
    bar = progress("teacher-forcing the small model", len(items))
    traces = []
    for item, result in zip(items, results):
        traces.append(scorer.score(item.prompt, result.text))
        bar.update(1)
    bar.close()
    candidates = args.candidates or [*QWEN3_CUES, *EASY_CUES, *HARD_CUES, *COPY_PHRASES]
    rows = cue_table(traces, candidates, SENTENCE_ENDS, args.min_count, args.min_margin)
    print(f"\nlarge-only accuracy on {len(items)} calibration problems: {100 * summary.accuracy:.1f}%")
    print(table(["cue", "count", "mean margin", "min margin", "selected", "reason"],
                [[repr(r.cue), r.count, f"{r.mean_margin:.3f}", f"{r.mean_min_margin:.3f}",
                  "yes" if r.selected else "no", r.reason] for r in rows if r.count],
                markdown=False, right=(1, 2, 3)))
    unseen = [r.cue for r in rows if not r.count]
    if unseen:
        print(f"never in the traces ({len(unseen)}): {' '.join(repr(c) for c in unseen)}")
    cues = [r.cue for r in rows if r.selected]
    if not cues:
        raise RelayInputError("--min-margin", "no candidate cue qualifies; lower --min-margin or --min-count")
    print(f"selected cues: {cues}")
    return {"method": "relaygen", "cues": cues, "data": args.data, "small_model": args.small_model,
            "rule": {"min_count": args.min_count, "min_margin": args.min_margin, "sentence_ends": SENTENCE_ENDS},
            "large_only_accuracy": summary.accuracy, "table": [asdict(r) for r in rows]}


def calibrate_rstitch(client, items, fmt, args) -> dict:
    from relay_ray.bench.console import table
    from relay_ray.quality.calibrate import TauPoint, recommend_tau
    from relay_ray.quality.report import summarize
    from relay_ray.quality.runner import run_items
    from relay_ray.quality.runs import PolicyRun

    _, base = _large_only(client, items, fmt, args)
    rows = []
    for tau in args.taus:
        run = PolicyRun(f"rstitch tau={tau}", "rstitch", {"tau": tau})
        results = run_items(client, items, run, {"tau": tau}, fmt, args.max_new_tokens, args.concurrency)
        rows.append((tau, summarize(run, {"tau": tau}, results)))
    best = recommend_tau([TauPoint(t, s.accuracy, s.large_share) for t, s in rows], base.accuracy, args.target)
    print(f"\nlarge-only: accuracy {100 * base.accuracy:.1f}%, latency {base.mean_latency_ms:.0f} ms")
    body = [[tau, f"{100 * s.accuracy:.1f}%", f"{100 * s.accuracy / base.accuracy if base.accuracy else 0.0:.1f}%",
             f"{100 * s.large_share:.1f}%", f"{s.switches_per_request:.1f}", f"{s.mean_latency_ms:.0f}",
             "<- recommended" if best is not None and tau == best.tau else ""] for tau, s in rows]
    print(table(["tau", "accuracy", "vs large", "large share", "switches/req", "latency ms", ""], body,
                markdown=False, right=range(6)))
    if best is None:
        print(f"no tau keeps {100 * args.target:.0f}% of large-only accuracy; try smaller taus")
    return {"method": "rstitch", "data": args.data, "target": args.target, "large_only": base.model_dump(),
            "recommended_tau": best.tau if best else None, "sweep": [s.model_dump() | {"tau": t} for t, s in rows]}


def run(args: argparse.Namespace) -> int:
    from relay_ray.client import RelayClient
    from relay_ray.quality.dataset import load_dataset
    from relay_ray.quality.extract import parse_format

    if args.concurrency < 1:
        raise RelayInputError("--concurrency", "must be at least 1")
    try:
        fmt = parse_format(args.answer_format)
        items, errors = load_dataset(args.data)
    except ValueError as exc:
        raise RelayInputError("--answer-format", str(exc)) from None
    except FileNotFoundError as exc:
        raise RelayInputError("--data", str(exc)) from None
    for err in errors:
        print(f"{args.data}: {err}", file=sys.stderr)
    if not items:
        raise RelayInputError("--data", f"{args.data} has no valid items")
    with RelayClient(args.address, args.app) as client:
        method = calibrate_relaygen if args.method == "relaygen" else calibrate_rstitch
        report = method(client, items, fmt, args)
    out = Path(args.out or (f"{args.method}-cues.json" if args.method == "relaygen" else "rstitch-calibration.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0
