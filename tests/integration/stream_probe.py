"""A streaming client in its own process that measures a server's pace while a test loads it.

    python -m tests.integration.stream_probe ADDRESS --app edge --token T --duration-s 60

Streams the same greedy relay request again and again until its standard input closes (or
``--duration-s`` passes), then prints one JSON object: ``gaps`` (``[monotonic end time, ms
between two deltas]``) and ``failures`` (status names). With ``--ready-after-gaps N`` it writes
one line ``ready`` to standard error once it has measured N gaps, so a caller can wait for a
baseline of a known size rather than for a time a slow machine may not fill. Its own process
keeps the measurement free of the loading client's interpreter lock and garbage collector (an
in-process thread was paused by them for up to 1.7 s while the server was fine);
``time.monotonic`` is the same clock in every process of the machine, so the caller can select
a window of the gaps.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import grpc

from relay_ray.client import build_request
from relay_ray.v1 import relay_pb2_grpc as rpb_grpc

PROMPT = "So we add 5 and 9, then the result to itself."


def _stop_on_eof(stopped: threading.Event) -> None:
    sys.stdin.read()
    stopped.set()


def probe(address: str, metadata: tuple, duration_s: float, stopped: threading.Event,
          ready_after_gaps: int = 0) -> dict:
    msg = build_request(PROMPT, "fixed-ratio", {"large_tokens": 6, "small_tokens": 6}, max_new_tokens=120)
    gaps: list[tuple[float, float]] = []
    failures: list[str] = []
    end = time.monotonic() + duration_s
    with grpc.insecure_channel(address) as channel:
        stub = rpb_grpc.RelayServiceStub(channel)
        while time.monotonic() < end and not stopped.is_set():
            last = None
            try:
                for event in stub.GenerateStream(msg, metadata=metadata, timeout=60):
                    now = time.monotonic()
                    if event.WhichOneof("event") == "delta":
                        if last is not None:
                            gaps.append((now, (now - last) * 1000.0))
                            if len(gaps) == ready_after_gaps:
                                print("ready", file=sys.stderr, flush=True)
                        last = now
            except grpc.RpcError as exc:  # recorded, not raised: the caller asserts on them
                failures.append(exc.code().name)
    return {"gaps": gaps, "failures": failures}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("address", help="host:port of Serve's gRPC proxy (loopback)")
    p.add_argument("--app", required=True, help="the Serve application to stream from")
    p.add_argument("--token", default=None, help="bearer token, if the application requires one")
    p.add_argument("--duration-s", type=float, default=600.0, help="stop after this long at the latest")
    p.add_argument("--ready-after-gaps", type=int, default=0,
                   help="write 'ready' to standard error after this many gaps (0: never)")
    args = p.parse_args(argv)
    metadata = (("application", args.app),) + ((("authorization", f"Bearer {args.token}"),) if args.token else ())
    stopped = threading.Event()
    threading.Thread(target=_stop_on_eof, args=(stopped,), daemon=True).start()
    json.dump(probe(args.address, metadata, args.duration_s, stopped, args.ready_after_gaps), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
