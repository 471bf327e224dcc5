"""rstitch at c=1 with the large tier's core shared (as served) or reserved for the large tier
alone, toggled item by item on one deployment: how much of a handoff into the large tier is the
engine's own work and how much is other processes on its core.

    python loadtest/large_core_isolation.py --config cluster/serve-scaled.yaml --items 20

On a machine of two cores, the large tier's worker is bound to one core (``cpu_threads_bind``),
but every other process (the small tier's engine processes, the replicas, the controller, Serve's
proxy, Ray's own daemons, this client) may run there too. In the ``isolated`` arm every process
this run started (this process and its descendants), except the large tier's engine core and
worker, is bound to the other cores, and those two to the worker's; in ``shared`` every process
gets its affinity back. Each item runs once in each arm (alternating which goes first) on emptied
prefix caches. It prints, per arm, the mean request latency and the p50 of the handoffs into the
large tier (the tier's time to its first token, and the engine's step within it) and of the
uncached tokens, in the large tier's decode steps of the same arm (its large-only requests).
Only processes of this run are touched, by pid; loopback only. docs/benchmarks.md, "Item 3".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ARMS = ("shared", "isolated")


def _large_engine() -> tuple[set[int], set[int]]:
    """(pids of the large tier's engine core and workers, the workers' cores) of app ``relay``."""
    from relay_ray.serve.replicas import engine_processes

    pids: set[int] = set()
    cores: set[int] = set()
    for core, workers, cpus in engine_processes("relay", "LargeTier"):
        pids |= {core, *workers}
        cores |= cpus
    if not pids:
        raise SystemExit("the large tier's engine processes were not found")
    return pids, cores


def _apply(arm: str, large_pids: set[int], large_cores: set[int], defaults: dict[int, set[int]]) -> None:
    import psutil

    from relay_ray.serve.replicas import bind_threads

    others = set(range(os.cpu_count() or 1)) - large_cores
    run = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    for pid in run:
        if arm == "shared":
            bind_threads(pid, defaults.get(pid, set(range(os.cpu_count() or 1))))
        elif pid in large_pids:
            bind_threads(pid, large_cores)
        else:
            bind_threads(pid, others)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cluster/serve-scaled.yaml")
    p.add_argument("--data", default="data/arith/test.jsonl")
    p.add_argument("--items", type=int, default=20, help="test items; each runs the relay and large-only in both arms")
    p.add_argument("--run", default="rstitch:tau=0.12", help="POLICY[:KEY=VALUE,...], as relay-ray eval's --policies")
    args = p.parse_args(argv)
    if args.items < 2:
        print("--items must be at least 2", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("needs at least 2 cores", file=sys.stderr)
        return 2
    from ray import serve

    from relay_ray.bench.console import measure_at_normal_priority
    from relay_ray.client import RelayClient
    from relay_ray.quality import matrix_run
    from relay_ray.quality.compute import segments_into_large, single_tier_costs
    from relay_ray.quality.dataset import load_dataset
    from relay_ray.quality.extract import parse_format
    from relay_ray.quality.runner import run_one
    from relay_ray.quality.runs import parse_run
    from relay_ray.serve.builder import build_app
    from relay_ray.serve.local import load_serve_file, start_serve, stop_local

    serve_file = load_serve_file(Path(args.config))
    run, large_only, fmt = parse_run(args.run), parse_run("large-only"), parse_format("answer-line")
    items = load_dataset(args.data)[0][:args.items]
    relay: dict[str, list] = defaultdict(list)
    large: dict[str, list] = defaultdict(list)
    measure_at_normal_priority()
    start_serve(serve_file)
    try:
        import psutil

        serve.run(build_app(serve_file.relay), name="relay", route_prefix="/")
        large_pids, large_cores = _large_engine()
        run_pids = {os.getpid()} | {q.pid for q in psutil.Process().children(recursive=True)}
        defaults = {pid: set(psutil.Process(pid).cpu_affinity()) for pid in run_pids if psutil.pid_exists(pid)}
        print(f"large tier's engine processes {sorted(large_pids)} on cores {sorted(large_cores)}; "
              f"{len(run_pids)} processes of this run", flush=True)
        with RelayClient(f"127.0.0.1:{serve_file.grpc_port}", timeout_s=600) as client:
            client.wait_ready()
            run_one(client, items[-1], run, run.params, fmt, 512, True)  # warm up
            for k, item in enumerate(items):
                for arm in (ARMS if k % 2 == 0 else ARMS[::-1]):
                    _apply(arm, large_pids, large_cores, defaults)
                    for what, into in ((run, relay), (large_only, large)):
                        matrix_run._reset_prefix_caches("relay")
                        into[arm].append(run_one(client, item, what, what.params, fmt, 512, False))
                print(f"\r{k + 1}/{len(items)} items", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
            _apply("shared", large_pids, large_cores, defaults)
    finally:
        stop_local()
    print(f"{run.label}, {len(items)} items per arm, c=1, prefix caches emptied before each request")
    print("| large tier's core | request ms (mean) | large decode step ms | handoffs | uncached p50 | "
          "tier's first token p50 ms (steps) | engine's step p50 ms (steps) |")
    print("|---|---|---|---|---|---|---|")
    for arm in ARMS:
        # the median request's step (TierCost.of takes the fastest): each arm's typical step
        step = statistics.median(c.ms_per_token for c in single_tier_costs(large[arm]))
        hs = segments_into_large(relay[arm])
        first, engine = (statistics.median(getattr(h, a) for h in hs) for a in ("prefill_ms", "engine_step_ms"))
        uncached = statistics.median(h.num_prompt_tokens - h.num_cached_tokens for h in hs)
        print(f"| {arm} | {statistics.mean(r.client_ms for r in relay[arm]):.0f} | {step:.1f} | {len(hs)} | "
              f"{uncached:.0f} | {first:.1f} ({first / step:.2f}) | {engine:.1f} ({engine / step:.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
