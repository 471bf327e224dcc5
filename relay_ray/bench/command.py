"""`relay-ray bench`: the performance matrix of issue 4 in one run.

For each model pair (a Serve config): deploy the relay and its peers one after another on
the same cores, run every scenario at every concurrency, then print the tables (efficiency,
handoff overhead, throughput, memory, controller CPU) and write JSON / markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from relay_ray.bench.scenarios import CONCURRENCY

DEFAULT_PAIRS = ("bench=cluster/serve-bench.yaml", "demo=cluster/serve-local.yaml")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="performance matrix: relay vs ideal, vs large-only and speculative decoding",
        description="Deploy each model pair's relay and its peers in turn on this machine and measure "
                    "large-only, small-only and fixed-ratio relay patterns (large share 25%/70%, "
                    "short and long segments) at several concurrencies. Prints tables; --json/--markdown "
                    "keep them. Build the bench pair first with `make bench-models`.")
    p.add_argument("--pair", action="append", metavar="NAME=CONFIG",
                   help=f"model pair to measure (repeatable; default: {' '.join(DEFAULT_PAIRS)})")
    p.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY),
                   help="requests in flight (default: 1 4 16)")
    p.add_argument("--requests", type=int, default=4, help="requests per scenario at concurrency 1 "
                   "(concurrent runs send two waves: 2 x concurrency)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="tokens per request (EOS ignored)")
    p.add_argument("--scenarios", nargs="*", default=None,
                   help="only scenarios whose label contains one of these strings, e.g. '25%%' large-only")
    p.add_argument("--no-peers", action="store_true", help="skip the large-only x2 and speculative peers")
    p.add_argument("--no-spec", action="store_true", help="skip the speculative-decoding peer")
    p.add_argument("--spec-pairs", nargs="*", default=["demo"],
                   help="pairs that get the speculative-decoding peer (default: demo)")
    p.add_argument("--prefill-ahead", choices=["on", "off", "both"], default=None,
                   help="override the controller's prefill-ahead: on (large tier warmed), both (both tiers), "
                        "off (ablation; default: the config's)")
    p.add_argument("--transport", choices=["direct", "handle"], default=None,
                   help="override the controller's transport (ablation; default: the config's)")
    p.add_argument("--memory-requests", type=int, default=1000,
                   help="sequential requests of the memory-growth check (0: skip)")
    p.add_argument("--memory-pair", default="demo", help="pair the memory-growth check runs on")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--markdown", default=None, help="write the tables to this markdown file")
    p.set_defaults(func=run)


def _parse_pairs(values: list[str] | None) -> list[tuple[str, Path]]:
    from relay_ray.errors import RelayInputError

    pairs = []
    for value in values or DEFAULT_PAIRS:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise RelayInputError("--pair", f"{value!r} is not NAME=CONFIG, e.g. bench=cluster/serve-bench.yaml")
        if not Path(path).is_file():
            raise RelayInputError("--pair", f"{path} does not exist")
        pairs.append((name, Path(path)))
    return pairs


@dataclass
class _Collected:
    """Everything a bench run measured, for the tables and the JSON."""

    rows: list = field(default_factory=list)
    memory: list = field(default_factory=list)
    placements: list = field(default_factory=list)
    growth_md: str = ""


def _with_overrides(args, config):
    """The pair's config with the command line's controller overrides (ablations), and the
    fixed-ratio segment floor lowered to the bench's shortest pattern."""
    from relay_ray.types import Tier

    overrides = {"prefill_ahead": args.prefill_ahead != "off"} if args.prefill_ahead else {}
    if args.prefill_ahead == "both":
        overrides["prefill_ahead_tiers"] = (Tier.LARGE, Tier.SMALL)
    if args.transport:
        overrides["transport"] = args.transport
    limits = config.controller.input_limits
    if limits.min_fixed_segment_tokens > 1:  # the R-Stitch-like pattern's large segments are one token
        overrides["input_limits"] = limits.model_copy(update={"min_fixed_segment_tokens": 1})
    if not overrides:
        return config
    return config.model_copy(update={"controller": config.controller.model_copy(update=overrides)})


def _scenario_runs(args, client, target, c: int) -> dict:
    """Every scenario of ``target`` at concurrency ``c`` (single-tier runs always: they give the costs)."""
    from relay_ray.bench.runner import run_scenario
    from relay_ray.bench.scenarios import num_requests

    runs = {}
    offset = 1_000_000 * c  # fresh prompts for every run (run_scenario: no run prefills for another)
    for scenario in target.scenarios:
        if args.scenarios and scenario.is_relay and not any(w in scenario.label for w in args.scenarios):
            continue
        count = num_requests(c, args.requests)
        runs[scenario.label] = run_scenario(client, scenario, c, count, args.max_new_tokens,
                                            f"{target.name} c={c} {scenario.label}", prompt_offset=offset)
        offset += count
    return runs


def _measure_pair(args, name: str, config, address: str, out: _Collected) -> None:
    """Deploy each target of one pair in turn and measure it; relay targets give the tier costs."""
    from relay_ray.bench import memory, report
    from relay_ray.bench.targets import APP_NAME, deploy, targets_for
    from relay_ray.client import RelayClient, build_request

    costs: dict[int, tuple] = {}
    baselines: dict[int, object] = {}
    targets = targets_for(name, config, peers=not args.no_peers,
                          speculative=not args.no_spec and name in args.spec_pairs)
    for target in targets:
        print(f"[bench] deploying {target.name} ({target.placement}) ...", file=sys.stderr, flush=True)
        deploy(target)
        out.placements.append((target.name, target.placement))
        with RelayClient(address, timeout_s=3600) as client:
            client.wait_ready()
            for policy, params in (("large-only", {}), ("fixed-ratio", {"large_tokens": 4, "small_tokens": 4})):
                client.generate(build_request("warm up the tiers", policy, params, max_new_tokens=16))
            for c in args.concurrency:
                runs = _scenario_runs(args, client, target, c)
                if target.is_relay:
                    costs[c] = (report.TierCost.of(runs["large-only"], True),
                                report.TierCost.of(runs["small-only"], False))
                    baselines[c] = runs["large-only"]
                if c in costs:
                    out.rows += [report.summarize(target.name, r, *costs[c], baselines[c]) for r in runs.values()]
            out.memory += [(target.name, m) for m in memory.measure(APP_NAME)]
            if target is targets[0] and name == args.memory_pair and args.memory_requests > 0:
                out.growth_md = _memory_growth(client, target.name, args.memory_requests)


def run(args: argparse.Namespace) -> int:
    from relay_ray.bench import controller_cpu, report
    from relay_ray.bench.console import measure_at_normal_priority
    from relay_ray.serve.local import load_serve_file, start_serve, stop_local

    pairs = _parse_pairs(args.pair)
    files = {name: load_serve_file(path) for name, path in pairs}
    started = time.time()
    print("[bench] controller CPU micro-benchmark (no engines) ...", file=sys.stderr, flush=True)
    cpu_rows = controller_cpu.run()
    out = _Collected()
    measure_at_normal_priority()
    start_serve(files[pairs[0][0]])
    address = f"127.0.0.1:{files[pairs[0][0]].grpc_port}"
    try:
        for name, _ in pairs:
            _measure_pair(args, name, _with_overrides(args, files[name].relay), address, out)
    finally:
        stop_local()
    elapsed_min = (time.time() - started) / 60.0
    md = _markdown(args, out.rows, cpu_rows, out.memory, out.growth_md, out.placements, elapsed_min)
    print(md)
    if args.markdown:
        Path(args.markdown).write_text(md + "\n")
        print(f"[bench] wrote {args.markdown}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": report.as_dicts(out.rows), "controller_cpu": [asdict(r) for r in cpu_rows],
            "memory": [{"target": t, **asdict(m)} for t, m in out.memory],
            "placements": dict(out.placements), "minutes": elapsed_min,
        }, indent=2))
        print(f"[bench] wrote {args.json}", file=sys.stderr)
    return 0


def _memory_growth(client, pair: str, num_requests: int) -> str:
    from relay_ray.bench import memory
    from relay_ray.bench.console import progress
    from relay_ray.bench.scenarios import bench_prompt
    from relay_ray.bench.targets import APP_NAME
    from relay_ray.client import build_request

    params = {"large_tokens": 4, "small_tokens": 4}
    warmup = min(100, num_requests)

    def send(i: int) -> None:
        client.generate(build_request(bench_prompt(5000 + i % 200), "fixed-ratio", params, max_new_tokens=16))

    bar = progress(f"{pair} memory growth", num_requests)
    growth = memory.growth(APP_NAME, send, num_requests, warmup, lambda done, total: bar.update(1))
    bar.close()
    return memory.growth_table(pair, growth, num_requests, warmup)


def _markdown(args, rows, cpu_rows, mem_rows, growth_md, placements, elapsed_min: float) -> str:
    import os
    import platform

    from relay_ray.bench import controller_cpu, memory, report

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    parts = [
        f"Command: `relay-ray bench {' '.join(sys.argv[2:]) if sys.argv[1:2] == ['bench'] else ''}`".rstrip(),
        (f"Machine: {machine}. Run took {elapsed_min:.1f} min. Every request writes {args.max_new_tokens} "
         "tokens (EOS ignored); ideal, efficiency and speedup are defined in relay_ray/bench/report.py."),
        "", "Placement:", *[f"- {name}: {where}" for name, where in placements],
        "", "### Latency, efficiency, throughput", report.latency_table(rows),
        "", "### Handoffs (ms; extra = handoff minus one decode step of the receiving tier)",
        report.handoff_table(rows),
        "", "### Relay vs large-only on the same two cores",
        *[report.throughput_table(rows, name) for name in dict.fromkeys(r.target for r in rows)
          if report.throughput_table(rows, name)],
        "", "### Controller CPU per segment (micro-benchmark, no engines)", controller_cpu.table(cpu_rows),
        "", "### Memory (resident, per component)", memory.table(mem_rows),
    ]
    if growth_md:
        parts += ["", "### Memory across sequential requests", growth_md]
    return "\n".join(parts)
