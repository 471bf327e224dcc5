"""`relay-ray bench`: start (or reach) a relay, measure handoffs and per-token times, print a table."""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    from relay_ray.bench import handoff
    from relay_ray.client import RelayClient

    def progress(done: int, total: int) -> None:
        print(f"\r[bench] relayed requests {done}/{total}", end="" if done < total else "\n", flush=True)

    started_here = args.address is None
    if started_here:
        from relay_ray.serve.local import load_serve_file, start_local

        serve_file = load_serve_file(args.config)
        print(f"[bench] starting the relay from {args.config} ...", flush=True)
        start_local(serve_file)
        address = f"127.0.0.1:{serve_file.grpc_port}"
    else:
        address = args.address
    try:
        with RelayClient(address) as client:
            result = handoff.run(client, args.requests, args.new_tokens, args.large_tokens, args.small_tokens, progress)
    finally:
        if started_here:
            from relay_ray.serve.local import stop_local

            stop_local()
    print(handoff.table(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(handoff.as_dict(result), fh, indent=2)
        print(f"[bench] wrote {args.json}")
    return 0
