"""Side-by-side throughput of two values of one tier setting, on one machine, in one run.

    python loadtest/ab_tier_setting.py --config cluster/serve-scaled.yaml \\
        --setting large.first_chunk_tokens --values 0 1 --run rstitch:tau=0.12 --items 200

Deploys the config twice at once (one Serve application per value; an idle application's
engines take no CPU), then runs full passes of the first ``--items`` test problems at
``--concurrency`` through each, in the order A B B A (``--rounds`` times), so a drift of the
machine's speed weighs on both values alike. Prints requests per second per pass, the mean per
value, and the answers' accuracy (greedy: the values must agree). Loopback only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cluster/serve-scaled.yaml")
    p.add_argument("--setting", required=True, help="TIER.FIELD of the relay config, e.g. large.first_chunk_tokens")
    p.add_argument("--values", nargs=2, required=True, help="the two values (parsed as JSON, else text)")
    p.add_argument("--run", default="rstitch:tau=0.12", help="POLICY[:KEY=VALUE,...], as relay-ray eval's --policies")
    p.add_argument("--data", default="data/arith/test.jsonl")
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=1, help="A B B A blocks")
    return p


def _value(text: str):
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tier, _, field = args.setting.partition(".")
    if tier not in ("large", "small", "tiers", "controller") or not field:
        print(f"--setting {args.setting!r}: expected large.FIELD, small.FIELD, tiers.FIELD (both tiers) or "
              "controller.FIELD", file=sys.stderr)
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
    base = serve_file.relay
    sections = ("large", "small") if tier == "tiers" else (tier,)
    if field not in type(getattr(base, sections[0])).model_fields:
        print(f"--setting: {sections[0]} has no field {field!r}", file=sys.stderr)
        return 2
    apps = {f"ab{i}": base.model_copy(update={t: getattr(base, t).model_copy(update={field: _value(v)})
                                              for t in sections})
            for i, v in enumerate(args.values)}
    names = list(apps)
    run = parse_run(args.run)
    items = load_dataset(args.data)[0][:args.items]
    fmt = parse_format("answer-line")
    passes: dict[str, list[tuple[float, int]]] = {n: [] for n in names}
    measure_at_normal_priority()
    start_serve(serve_file)
    try:
        for name, config in apps.items():
            serve.run(build_app(config), name=name, route_prefix=f"/{name}")
        for name in [names[0], names[1], names[1], names[0]] * args.rounds:
            with RelayClient(f"127.0.0.1:{serve_file.grpc_port}", app_name=name, timeout_s=3600) as client:
                client.wait_ready()
                started = time.perf_counter()
                label = f"{args.setting}={args.values[names.index(name)]}"
                results = run_items(client, items, run, run.params, fmt, 512, args.concurrency, False, label=label)
                rate = len(results) / (time.perf_counter() - started)
                passes[name].append((rate, sum(r.correct for r in results)))
                print(f"{label}: {rate:.3f} req/s, {passes[name][-1][1]}/{len(results)} correct", flush=True)
    finally:
        stop_local()
    for name, value in zip(names, args.values):
        rates = [r for r, _ in passes[name]]
        print(f"{args.setting}={value}: mean {sum(rates) / len(rates):.3f} req/s over {len(rates)} passes "
              f"({', '.join(f'{r:.3f}' for r in rates)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
