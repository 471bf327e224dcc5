"""Does a deployment get slower with use? c=1 latency passes on fresh engines, then after c=16 load.

    python loadtest/latency_after_load.py --config cluster/serve-scaled.yaml --run rstitch:tau=0.12

Deploys the config once and runs, on the same engines: the latency items twice (the second time
their prompts are in the prefix cache), then ``--load-passes`` times the whole split at
``--concurrency`` followed by the latency items again. Prints per latency pass the mean request
time, the large tier's prefill step (p50 of its segments' engine step) and the small tier's
decode time per token, and per load pass its requests per second. Loopback only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cluster/serve-scaled.yaml")
    p.add_argument("--run", default="rstitch:tau=0.12", help="POLICY[:KEY=VALUE,...], as relay-ray eval's --policies")
    p.add_argument("--data", default="data/arith/test.jsonl")
    p.add_argument("--latency-items", type=int, default=20)
    p.add_argument("--load-passes", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=768)
    return p


def summary(results) -> str:
    large = [s for r in results for s in r.segments if s.large]
    small = [s for r in results for s in r.segments if not s.large]
    small_tokens = sum(s.num_tokens + s.num_dropped for s in small)
    step = f"{statistics.median(s.engine_step_ms for s in large):.1f}" if large else "—"
    per_token = f"{sum(s.decode_ms for s in small) / small_tokens:.3f}" if small_tokens else "—"
    return (f"request {statistics.mean(r.latency_ms for r in results):.0f} ms, large prefill step p50 {step} ms, "
            f"small ms per token {per_token}, {sum(r.correct for r in results)}/{len(results)} right")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.latency_items, args.concurrency, args.max_new_tokens) < 1 or args.load_passes < 0:
        print("--latency-items, --concurrency and --max-new-tokens must be >= 1, --load-passes >= 0", file=sys.stderr)
        return 2
    from ray import serve

    from relay_ray.bench.console import measure_at_normal_priority
    from relay_ray.client import RelayClient
    from relay_ray.quality.dataset import load_dataset
    from relay_ray.quality.extract import parse_format
    from relay_ray.quality.runner import run_items
    from relay_ray.quality.runs import parse_run
    from relay_ray.serve.builder import build_app
    from relay_ray.serve.local import load_serve_file, start_serve, stop_local

    serve_file = load_serve_file(Path(args.config))
    run = parse_run(args.run)
    items = load_dataset(args.data)[0]
    fmt = parse_format("answer-line")

    def latency(client, tag: str) -> None:
        results = run_items(client, items[:args.latency_items], run, run.params, fmt, args.max_new_tokens, 1, False,
                            label=f"c=1 {tag}")
        print(f"latency pass, {tag}: {summary(results)}", flush=True)

    measure_at_normal_priority()
    start_serve(serve_file)
    try:
        serve.run(build_app(serve_file.relay), name="load", route_prefix="/load")
        with RelayClient(f"127.0.0.1:{serve_file.grpc_port}", app_name="load", timeout_s=3600) as client:
            client.wait_ready()
            latency(client, "fresh engines")
            latency(client, "the same items again")
            for k in range(1, args.load_passes + 1):
                started = time.perf_counter()
                results = run_items(client, items, run, run.params, fmt, args.max_new_tokens, args.concurrency, False,
                                    label=f"c={args.concurrency} pass {k}")
                print(f"load pass {k}: {len(results) / (time.perf_counter() - started):.3f} req/s", flush=True)
                latency(client, f"after {k} load pass{'es' if k > 1 else ''}")
    finally:
        stop_local()
    return 0


if __name__ == "__main__":
    sys.exit(main())
