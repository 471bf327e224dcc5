"""Flood a served relay's OpenAI HTTP API and its gRPC API with many times its admission limit.

    relay-ray serve --config my-serve.yaml &      # a config with controller.max_ongoing_requests
                                                  # and max_queued_requests set (e.g. 4 and 4)
    python loadtest/admission_flood.py --clients 80 --duration-s 15 --rounds 2

Each round runs ``--clients`` unary clients for ``--duration-s`` on the HTTP API
(``/v1/completions``), then as many on gRPC (``Generate``), every client asking again at once
after an answer and 0.5 s after a refusal (as a client should). It prints, per API and round,
the refusals (429 / RESOURCE_EXHAUSTED) with their latency p50 / p95 / max, how many the
proxy's admission gate answered (its OpenAI error body, ``rate_limit_exceeded``; gRPC: its
refusal text), the answered requests and their latency p50, and any other status. Serve the
relay with ``RELAY_PROXY_ADMISSION_GATE=0`` in the environment to compare without the gates.
Loopback only; every loop is bounded by the duration.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

PROMPT = "So we add 3 and 4, then we add the result to itself."


async def http_flood(base_url: str, app: str, clients: int, duration_s: float, max_tokens: int) -> list[tuple]:
    import httpx

    out: list[tuple] = []
    end = time.monotonic() + duration_s
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients + 10)) as http:
        async def client(k: int) -> None:
            await asyncio.sleep(0.5 * k / clients)
            while time.monotonic() < end:
                started = time.perf_counter()
                r = await http.post(f"{base_url}/v1/completions",
                                    json={"model": "small-only", "prompt": PROMPT, "max_tokens": max_tokens})
                out.append((r.status_code, time.perf_counter() - started, b"rate_limit_exceeded" in r.content))
                if r.status_code != 200:
                    await asyncio.sleep(0.5)
        await asyncio.gather(*(client(k) for k in range(clients)))
    return out


async def grpc_flood(address: str, app: str, clients: int, duration_s: float, max_tokens: int) -> list[tuple]:
    import grpc

    from relay_ray.client import build_request
    from relay_ray.rpc.admission_gate import REFUSAL
    from relay_ray.v1 import relay_pb2_grpc

    out: list[tuple] = []
    end = time.monotonic() + duration_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = relay_pb2_grpc.RelayServiceStub(channel)
        request = build_request(PROMPT, "small-only", max_new_tokens=max_tokens)

        async def client(k: int) -> None:
            await asyncio.sleep(0.5 * k / clients)
            while time.monotonic() < end:
                started = time.perf_counter()
                try:
                    await stub.Generate(request, metadata=(("application", app),), timeout=120)
                    out.append(("OK", time.perf_counter() - started, False))
                except grpc.aio.AioRpcError as exc:
                    out.append((exc.code().name, time.perf_counter() - started, exc.details() == REFUSAL))
                    await asyncio.sleep(0.5)
        await asyncio.gather(*(client(k) for k in range(clients)))
    return out


def summary(name: str, outcomes: list[tuple], ok, refused) -> str:
    rejected = sorted(t for code, t, _ in outcomes if code == refused)
    served = [t for code, t, _ in outcomes if code == ok]
    by_gate = sum(gated for code, _, gated in outcomes if code == refused)
    others = sorted({str(code) for code, _, _ in outcomes} - {str(ok), str(refused)})
    ms = lambda s: f"{1000 * s:.0f}"  # noqa: E731
    p95 = statistics.quantiles(rejected, n=20)[-1] if len(rejected) > 1 else float("nan")
    refusals = (f"refused {len(rejected)} ({by_gate} by the gate), p50 {ms(statistics.median(rejected))} ms, "
                f"p95 {ms(p95)} ms, max {ms(rejected[-1])} ms") if rejected else "refused 0"
    answered = f"served {len(served)}, p50 {ms(statistics.median(served))} ms" if served else "served 0"
    return f"{name}: {refusals}; {answered}; other statuses: {', '.join(others) or 'none'}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http-url", default="http://127.0.0.1:8000", help="Serve's HTTP proxy plus the app's route prefix")
    p.add_argument("--grpc", default="127.0.0.1:9000", help="Serve's gRPC proxy")
    p.add_argument("--app", default="relay", help="the application's name (gRPC `application` metadata)")
    p.add_argument("--clients", type=int, default=80, help="concurrent clients (10x the limit of 4 + 4)")
    p.add_argument("--duration-s", type=float, default=15.0, help="seconds of each flood")
    p.add_argument("--rounds", type=int, default=2, help="HTTP-then-gRPC rounds")
    p.add_argument("--max-tokens", type=int, default=200, help="tokens each admitted request writes")
    args = p.parse_args(argv)
    if args.clients < 1 or not 0 < args.duration_s <= 600 or not 1 <= args.rounds <= 20 or args.max_tokens < 1:
        p.error("need --clients >= 1, 0 < --duration-s <= 600, 1 <= --rounds <= 20, --max-tokens >= 1")
    for host in (args.http_url.split("//", 1)[-1].split(":")[0], args.grpc.split(":")[0]):
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            p.error(f"{host}: a flood goes to a loopback address only")
    for round_index in range(args.rounds):
        print(summary(f"HTTP round {round_index + 1}", asyncio.run(http_flood(
            args.http_url, args.app, args.clients, args.duration_s, args.max_tokens)), 200, 429), flush=True)
        print(summary(f"gRPC round {round_index + 1}", asyncio.run(grpc_flood(
            args.grpc, args.app, args.clients, args.duration_s, args.max_tokens)), "OK", "RESOURCE_EXHAUSTED"),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
