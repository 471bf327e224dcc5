"""``python -m relay_ray.quality.matrix_command``: the issue-10 matrix in one command.

    # dev: choose the rstitch tau and the relayllm call floor (writes the decisions file;
    # with --only, a group not run keeps the file's earlier choice)
    python -m relay_ray.quality.matrix_command run --stage dev --data data/arith/dev.jsonl \\
        --out out/matrix-dev --write-decisions data/arith/scaled-decisions.json
    # final: every row on the test split, once (tables + Pareto PNG)
    python -m relay_ray.quality.matrix_command run --stage final --data data/arith/test.jsonl \\
        --out out/matrix-test --png docs/quality-pareto.png
    # re-render tables and plot from a results file
    python -m relay_ray.quality.matrix_command report out/matrix-test --png docs/quality-pareto.png

Run it under the heavy-run lock (``flock /tmp/relay-heavy.lock ...``): it starts Ray, Serve
and the engines itself (``make quality-matrix`` does all of this).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from relay_ray.quality.matrix import (
    CONFIGS, CUES_FILE, DECISIONS_FILE, SPEC, Decisions, check_plan, dev_plan, final_plan,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m relay_ray.quality.matrix_command", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="deploy the scaled pair's configs and run a stage's entries")
    run.add_argument("--stage", choices=["dev", "final"], required=True)
    run.add_argument("--data", required=True, help="JSONL split (dev for --stage dev, test for final)")
    run.add_argument("--out", required=True, help="folder for results.json, report.md")
    run.add_argument("--limit", type=int, default=None, help="only the first N items (validation runs)")
    run.add_argument("--latency-items", type=int, default=40, help="items of the concurrency-1 passes")
    run.add_argument("--curve-items", type=int, default=200, help="final: items of the tau-sweep and cue-set "
                     "points' full passes (0: all)")
    run.add_argument("--full-concurrency", type=int, default=16, help="requests in flight in the full passes")
    run.add_argument("--decisions", default=DECISIONS_FILE, help="final: the dev stage's decisions file")
    run.add_argument("--write-decisions", default=None, help="dev: write the decisions here")
    run.add_argument("--cues-file", default=CUES_FILE, help="calibrated relaygen cues (the cue sets build on them)")
    run.add_argument("--only", nargs="+", default=None, help="only entries with these labels (and what they match)")
    run.add_argument("--resume", action="store_true", help="keep passes already in OUT/results.json")
    run.add_argument("--co-deploy", action="store_true",
                     help="keep every deployment up side by side and interleave the latency passes of all of "
                          "them, so that rows of different deployments (ablation arms) compare; each "
                          "deployment holds its engines' memory (use with --only)")
    run.add_argument("--max-new-tokens", type=int, default=512)
    run.add_argument("--png", default=None, help="write the Pareto plot here (default: OUT/pareto.png)")
    rep = sub.add_parser("report", help="tables and plot from OUT/results.json")
    rep.add_argument("out")
    rep.add_argument("--png", default=None)
    return p


def _plan(args):
    if args.stage == "dev":
        entries = dev_plan()
    else:
        entries = final_plan(Decisions.load(args.decisions), args.cues_file, curve_items=args.curve_items or None)
    if args.only:
        wanted = set(args.only)
        wanted |= {e.match for e in entries if e.label in wanted and e.match}
        entries = [e for e in entries if e.label in wanted or e.label == "large-only"]
    check_plan(entries)
    return entries


def run(args) -> int:
    from relay_ray.quality.dataset import load_dataset
    from relay_ray.quality.extract import parse_format
    from relay_ray.quality.matrix_run import run_plan

    entries = _plan(args)
    items, errors = load_dataset(args.data, args.limit)
    if errors or not items:
        print(f"{args.data}: {len(errors)} bad line(s), {len(items)} items", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    meta = {"stage": args.stage, "data": args.data, "num_items": len(items), "latency_items": args.latency_items,
            "curve_items": args.curve_items, "full_concurrency": args.full_concurrency,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "configs": CONFIGS,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    if args.stage == "final":
        meta["decisions"] = Decisions.load(args.decisions).model_dump()
    results = run_plan(entries, items, out, args.latency_items, parse_format("answer-line"), args.max_new_tokens,
                       args.resume, meta, full_concurrency=args.full_concurrency, co_deploy=args.co_deploy)
    results.meta["minutes"] = results.meta.get("minutes", 0.0) + (time.time() - started) / 60.0
    results.save(out / "results.json")
    if args.stage == "dev" and args.write_decisions:
        from relay_ray.quality.matrix_report import decide

        target = Path(args.write_decisions)
        decisions = decide(results, Path(args.data).stem, previous=Decisions.load(target) if target.exists() else None)
        target.write_text(decisions.model_dump_json(indent=1) + "\n")
        print(f"wrote {target}: tau {decisions.rstitch_tau}, cue set {decisions.relaygen_cue_set!r}, "
              f"relayllm call floor {decisions.relayllm_min_call_tokens}")
    return report(out, args.png)


def report(out: Path, png: str | None = None) -> int:
    from relay_ray.quality.matrix_ablation import ablation_table
    from relay_ray.quality.matrix_plot import plot
    from relay_ray.quality.matrix_report import main_table, rows, spec_compute_shares, sweep_table, targets_table
    from relay_ray.quality.matrix_run import MatrixResults, deployment_config

    out = Path(out)
    results = MatrixResults.load(out / "results.json")
    spec = deployment_config(SPEC).large.speculative
    compute = spec_compute_shares(results, spec.model, spec.num_speculative_tokens)
    all_rows = rows(results)
    m = results.meta
    head = [f"Data: {m.get('data')} ({m.get('num_items')} items; concurrency-1 passes on the first "
            f"{m.get('latency_items')}). Stage: {m.get('stage')}. Machine: {m.get('machine')}. "
            f"Run took {m.get('minutes', 0):.0f} min.", "", f"Command: `{m.get('command')}`", ""]
    if m.get("decisions"):
        d = m["decisions"]
        head += [f"Decisions (made on the {d['split']} split): rstitch tau {d['rstitch_tau']}, relaygen cue set "
                 f"{d['relaygen_cue_set']!r}, relayllm call floor {d.get('relayllm_min_call_tokens', 1)}.", ""]
    md = "\n".join(head + ["### Policies", main_table(all_rows, compute), "", "### Tau sweep and cue sets",
                           sweep_table(all_rows), "", "### Against the issue's targets", targets_table(all_rows), ""])
    ablation = ablation_table(all_rows)
    if ablation:
        md += "\n### Prefill-ahead ablation (latency passes of one run)\n" + ablation + "\n"
    if compute:
        md += ("\nSpeculative decoding's large compute counts k + 1 positions per verification step from the "
               "greedy traces (relay_ray/quality/compute.py); relay + spec rows count only what segments report.\n")
    (out / "report.md").write_text(md)
    print(md)
    png_path = png or str(out / "pareto.png")
    plot(all_rows, png_path, f"{m.get('data')}: {m.get('num_items')} items, cost-scaled pair", compute)
    print(f"wrote {out / 'report.md'} and {png_path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "report":
        return report(Path(args.out), args.png)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
