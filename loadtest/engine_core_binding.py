"""rstitch at c=1 with each tier's vLLM engine core process free to run on any core, or bound
to the cores of its worker, toggled item by item on one deployment.

    python loadtest/engine_core_binding.py --config cluster/serve-scaled.yaml --items 40

On CPU vLLM runs a tier as an engine core process and a worker process; only the worker is bound
to the tier's cores (``cpu_threads_bind``). This deploys the config once, then for every test
item runs the request twice, once in each binding (alternating which goes first), each on
emptied prefix caches, and prints the mean latency of both and their ratio. It changes the
affinity only of the engine core processes this run started (found under its own Ray session),
by pid; loopback only. docs/benchmarks.md, "Item 3: where the CPU goes between the tiers".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cluster/serve-scaled.yaml")
    p.add_argument("--data", default="data/arith/test.jsonl")
    p.add_argument("--items", type=int, default=40)
    p.add_argument("--run", default="rstitch:tau=0.12", help="POLICY[:KEY=VALUE,...], as relay-ray eval's --policies")
    args = p.parse_args(argv)
    if args.items < 2:
        print("--items must be at least 2", file=sys.stderr)
        return 2
    from ray import serve

    from relay_ray.bench.console import measure_at_normal_priority
    from relay_ray.client import RelayClient
    from relay_ray.quality import matrix_run
    from relay_ray.quality.dataset import load_dataset
    from relay_ray.quality.extract import parse_format
    from relay_ray.quality.runner import run_one
    from relay_ray.quality.runs import parse_run
    from relay_ray.serve.builder import build_app
    from relay_ray.serve.local import load_serve_file, start_serve, stop_local
    from relay_ray.serve.replicas import bind_threads, engine_processes

    serve_file = load_serve_file(Path(args.config))
    run, fmt = parse_run(args.run), parse_format("answer-line")
    items = load_dataset(args.data)[0][:args.items]
    every_core = set(range(os.cpu_count() or 1))
    ms: dict[str, list[float]] = {"free": [], "bound": []}
    measure_at_normal_priority()
    start_serve(serve_file)
    try:
        serve.run(build_app(serve_file.relay), name="relay", route_prefix="/")
        cores = [(core, cpus) for tier in ("LargeTier", "SmallTier")
                 for core, _, cpus in engine_processes("relay", tier)]
        print(f"engine cores and their workers' cores: {cores}", flush=True)
        with RelayClient(f"127.0.0.1:{serve_file.grpc_port}", timeout_s=600) as client:
            client.wait_ready()
            run_one(client, items[-1], run, run.params, fmt, 512, True)  # warm up
            for k, item in enumerate(items):
                for mode in (("free", "bound") if k % 2 == 0 else ("bound", "free")):
                    for pid, cpus in cores:
                        bind_threads(pid, cpus if mode == "bound" else every_core)
                    matrix_run._reset_prefix_caches()
                    started = time.perf_counter()
                    run_one(client, item, run, run.params, fmt, 512, True)
                    ms[mode].append((time.perf_counter() - started) * 1000.0)
                print(f"\r{k + 1}/{len(items)} items", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
    finally:
        stop_local()
    for mode, values in ms.items():
        print(f"engine cores {mode}: mean {statistics.mean(values):.0f} ms, median {statistics.median(values):.0f} ms "
              f"over {len(values)} requests")
    print(f"bound vs free: {statistics.mean(ms['free']) / statistics.mean(ms['bound']):.3f}x (above 1: binding is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
