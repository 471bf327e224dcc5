"""``relay-ray eval``: run a JSONL dataset through a running relay for a list of policies.

Prints the papers' table (accuracy with its 95% interval and a paired test against
large-only, large-model token and compute share, switches per request, mean latency,
speedup over large-only) and writes ``results.json`` and ``results.md`` in
``--out``. Malformed dataset lines are reported line by line; the valid lines still run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from relay_ray.errors import RelayInputError

DEFAULT_POLICIES = ("large-only", "small-only")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help='JSONL file, one {"id", "prompt", "answer"} per line')
    p.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES), metavar="RUN",
                   help="runs as [LABEL=]POLICY[:KEY=VALUE,...], e.g. rstitch:tau=0.1 "
                        "relaygen:cues_file=cues.json random:match=rstitch (matched on large share and switches)")
    p.add_argument("--address", default="127.0.0.1:9000", help="host:port of Serve's gRPC proxy")
    p.add_argument("--app", default=None, help="Serve application name (when several run)")
    p.add_argument("--answer-format", default="answer-line",
                   help="answer-line (last 'Answer: X'), boxed (last \\boxed{X}) or regex:PATTERN")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--limit", type=int, default=None, help="only the first N valid items")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight (1 = batch-1 latency)")
    p.add_argument("--out", default=None, help="folder for results.json and results.md")
    p.add_argument("--keep-text", action="store_true", help="store every answer text in results.json")
    p.add_argument("--timeout-s", type=float, default=600.0, help="per request")


def _load(args) -> tuple:
    """(answer format, runs, items, line errors) or RelayInputError, before anything is sent."""
    from relay_ray.quality.dataset import load_dataset
    from relay_ray.quality.extract import parse_format
    from relay_ray.quality.runs import parse_runs

    try:
        fmt = parse_format(args.answer_format)
    except ValueError as exc:
        raise RelayInputError("--answer-format", str(exc)) from None
    if args.concurrency < 1:
        raise RelayInputError("--concurrency", "must be at least 1")
    runs = parse_runs(args.policies)
    try:
        items, errors = load_dataset(args.data, args.limit)
    except FileNotFoundError as exc:
        raise RelayInputError("data", str(exc)) from None
    for err in errors:
        print(f"{args.data}: {err}", file=sys.stderr)
    if errors:
        print(f"{args.data}: {len(errors)} bad line(s) skipped; {len(items)} valid item(s) will run",
              file=sys.stderr)
    if not items:
        raise RelayInputError("data", f"{args.data} has no valid items")
    return fmt, runs, items, errors


def run_policies(client, runs, items, fmt, max_new_tokens: int, concurrency: int, keep_text: bool = False):
    """Run every policy run in order (``match=`` runs after the run they match); returns the
    summaries (against large-only when it ran) and the per-item results by label."""
    from relay_ray.quality.report import summarize, with_baseline
    from relay_ray.quality.runner import run_items
    from relay_ray.quality.runs import matched_params

    summaries, results = [], {}
    for r in runs:
        params = dict(r.params)
        if r.match is not None:
            m = next(s for s in summaries if s.label == r.match)
            params = matched_params(params, m.large_share, m.large_share * m.mean_tokens, m.large_segments_per_request)
        started = time.perf_counter()
        results[r.label] = run_items(client, items, r, params, fmt, max_new_tokens, concurrency, keep_text)
        summaries.append(summarize(r, params, results[r.label], time.perf_counter() - started))
    return with_baseline(summaries, results), results


def run(args: argparse.Namespace) -> int:
    from relay_ray.client import RelayClient
    from relay_ray.quality.report import markdown_table, text_table, to_json

    fmt, runs, items, errors = _load(args)
    started = time.perf_counter()
    with RelayClient(args.address, args.app, args.timeout_s) as client:
        summaries, results = run_policies(client, runs, items, fmt, args.max_new_tokens, args.concurrency,
                                          args.keep_text)
    print(f"\n{len(items)} items from {args.data}, greedy, concurrency {args.concurrency}, "
          f"{(time.perf_counter() - started) / 60:.1f} min")
    print(text_table(summaries))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"data": str(args.data), "num_items": len(items), "bad_lines": [str(e) for e in errors],
                "answer_format": str(fmt), "max_new_tokens": args.max_new_tokens,
                "concurrency": args.concurrency, "address": args.address, "app": args.app}
        (out / "results.json").write_text(json.dumps(to_json(summaries, results, meta), indent=1) + "\n")
        (out / "results.md").write_text(markdown_table(summaries))
        print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0
