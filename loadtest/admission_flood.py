"""Flood a served relay's OpenAI HTTP API and its gRPC API with many times its admission limit.

    relay-ray serve --config my-serve.yaml &      # a config with controller.max_ongoing_requests
                                                  # and max_queued_requests set (e.g. 4 and 4)
    python loadtest/admission_flood.py --clients 80 --duration-s 15 --rounds 2

Each round runs ``--clients`` unary clients for ``--duration-s`` on the HTTP API
(``/v1/completions``), then as many on gRPC (``Generate``), every client asking again at once
after an answer and 0.5 s (+-20%, ``--retry-jitter``) after a refusal, as a client should: gRPC
jitters its backoff by +-20% too, and clients that retry in lock step arrive in bursts. It
prints, per API and round, the refusals (429 / RESOURCE_EXHAUSTED) with their latency p50 / p95
/ max, how many the proxy's admission gate answered (its OpenAI error body,
``rate_limit_exceeded``; gRPC: its refusal text), the answered requests and their latency p50,
and any other status. Serve the relay with ``RELAY_PROXY_ADMISSION_GATE=0`` in the environment
to compare without the gates.

A flood client's latency includes waiting for the flood process's own event loop, which runs
every other client's callbacks on the same two cores as the server. So each round also runs a
*probe*: one client in a process of its own that sends a call every ``--probe-interval-ms`` and
times only its own calls (as a client on another machine would see them), and the flood
process's event-loop lag (how late a 10 ms timer fires) is printed beside its figures. The flood
runs at the niceness of Ray's workers (``--flood-niceness``, 15), so that it takes no more of
the CPU than the proxy it floods; the probe keeps this process's niceness. The probe imports its
client library before the flood starts and exits after it ends: a process starting or exiting at
normal priority during a flood delays the server's answers and the flood's clients alike.
Loopback only; every loop is bounded by the duration.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import os
import random
import resource
import statistics
import threading
import time

RAY_WORKER_NICENESS = 15  # Ray starts its workers (Serve's proxy, replicas, engines) at this niceness
REFUSAL_BACKOFF_S = 0.5  # a flood client's wait after a refusal, before its jitter
PROMPT = "So we add 3 and 4, then we add the result to itself."


OK = {"http": 200, "grpc": "OK"}
REFUSED = {"http": 429, "grpc": "RESOURCE_EXHAUSTED"}


@contextlib.asynccontextmanager
async def caller(api: str, target: str, app: str, max_tokens: int, connections: int, http_client: str = "aiohttp"):
    """An async context manager yielding a coroutine function that makes one call to ``api``
    ("http" or "grpc") at ``target`` and returns (status, seconds, refused by the gate).
    ``http_client``: "aiohttp" (less of the client's CPU per call) or "httpx"."""
    if api == "http":
        body = {"model": "small-only", "prompt": PROMPT, "max_tokens": max_tokens}
        if http_client == "aiohttp":
            import aiohttp

            connector = aiohttp.TCPConnector(limit=connections + 10)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
                async def call_aiohttp() -> tuple:
                    started = time.perf_counter()
                    async with http.post(f"{target}/v1/completions", json=body) as r:
                        content = await r.read()
                    return r.status, time.perf_counter() - started, b"rate_limit_exceeded" in content
                yield call_aiohttp
            return
        import httpx

        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=connections + 10)) as http:
            async def call_httpx() -> tuple:
                started = time.perf_counter()
                r = await http.post(f"{target}/v1/completions", json=body)
                return r.status_code, time.perf_counter() - started, b"rate_limit_exceeded" in r.content
            yield call_httpx
        return
    import grpc

    from relay_ray.client import build_request
    from relay_ray.rpc.admission_gate import REFUSAL
    from relay_ray.v1 import relay_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 60)  # the first calls time no connect
        stub = relay_pb2_grpc.RelayServiceStub(channel)
        request = build_request(PROMPT, "small-only", max_new_tokens=max_tokens)

        async def call_grpc() -> tuple:
            started = time.perf_counter()
            try:
                await stub.Generate(request, metadata=(("application", app),), timeout=120)
                return "OK", time.perf_counter() - started, False
            except grpc.aio.AioRpcError as exc:
                return exc.code().name, time.perf_counter() - started, exc.details() == REFUSAL
        yield call_grpc


async def run_clients(api: str, target: str, app: str, clients: int, duration_s: float, max_tokens: int,
                      interval_s: float | None = None, http_client: str = "aiohttp",
                      retry_jitter: float = 0.2) -> list[tuple]:
    """``clients`` clients calling ``api`` for ``duration_s`` (starts spread over half a second).
    A flood client (``interval_s`` None) asks again at once after an answer and 0.5 s times a
    uniform factor in 1 +- ``retry_jitter`` after a refusal; a paced one every ``interval_s``.
    Every call's (status, seconds, by the gate)."""
    out: list[tuple] = []
    end = time.monotonic() + duration_s
    async with caller(api, target, app, max_tokens, clients, http_client) as call:
        async def client(k: int) -> None:
            await asyncio.sleep(0.5 * k / clients)
            while time.monotonic() < end:
                outcome = await call()
                out.append(outcome)
                if interval_s is not None:
                    await asyncio.sleep(max(0.0, interval_s - outcome[1]))
                elif outcome[0] != OK[api]:
                    await asyncio.sleep(REFUSAL_BACKOFF_S * random.uniform(1 - retry_jitter, 1 + retry_jitter))
        await asyncio.gather(*(client(k) for k in range(clients)))
    return out


async def loop_lag_s(duration_s: float, tick_s: float = 0.01) -> list[float]:
    """How late a ``tick_s`` timer fires on this event loop, for ``duration_s``."""
    lags: list[float] = []
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        before = time.perf_counter()
        await asyncio.sleep(tick_s)
        lags.append(max(0.0, time.perf_counter() - before - tick_s))
    return lags


async def with_lag(flood, duration_s: float) -> tuple[list[tuple], list[float]]:
    """Run ``flood`` and the loop-lag monitor side by side on one event loop."""
    outcomes, lags = await asyncio.gather(flood, loop_lag_s(duration_s))
    return outcomes, lags


def probe(api: str, target: str, app: str, duration_s: float, interval_s: float, max_tokens: int,
          http_client: str, ready, go, results) -> None:
    """One client in a process of its own, a call every ``interval_s`` (or right after the
    previous answer, if later) for ``duration_s`` from ``go``; puts its outcomes on ``results``.
    It imports its client library and sets ``ready`` before the flood starts, and stays until it
    is terminated: a process importing or exiting at normal priority takes the two cores from the
    server and the flood, whose calls then wait 100-300 ms (docs/reliability.md)."""
    _import_client(api, http_client)
    ready.set()
    go.wait(timeout=120)
    results.put(asyncio.run(run_clients(api, target, app, 1, duration_s, max_tokens, interval_s, http_client)))
    time.sleep(300)  # until terminated (bounded)


def _import_client(api: str, http_client: str) -> None:
    """Import what :func:`caller` will (the imports take the most CPU of a client's start)."""
    import importlib

    names = [http_client] if api == "http" else ["grpc", "relay_ray.client", "relay_ray.rpc.admission_gate",
                                                   "relay_ray.v1.relay_pb2_grpc"]
    for name in names:
        importlib.import_module(name)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def flood_round(api: str, args) -> tuple[list[tuple], list[float], list[tuple], float]:
    """One flood of ``api`` ("http" or "grpc") with its probe: (flood outcomes, loop lags, probe
    outcomes, CPU seconds the flood's process used)."""
    target = args.http_url if api == "http" else args.grpc
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Event(), ctx.Event(), ctx.Queue()
    prober = ctx.Process(target=probe, daemon=True,
                         args=(api, target, args.app, args.duration_s, args.probe_interval_ms / 1000,
                               args.max_tokens, args.http_client, ready, go, results))
    prober.start()

    def flood() -> tuple[list[tuple], list[float]]:
        # Linux niceness is per thread, and threads the flood's libraries start inherit it
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), args.flood_niceness)
        calls = run_clients(api, target, args.app, args.clients, args.duration_s, args.max_tokens,
                            http_client=args.http_client, retry_jitter=args.retry_jitter)
        return asyncio.run(with_lag(calls, args.duration_s))

    try:
        if not ready.wait(timeout=120):
            raise RuntimeError("the probe process did not start within 120 s")
        go.set()
        cpu_before_s = _cpu_s()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            outcomes, lags = pool.submit(flood).result()
        cpu_s = _cpu_s() - cpu_before_s
        probed = results.get(timeout=180)
    finally:
        prober.terminate()
        prober.join(timeout=10)
    return outcomes, lags, probed, cpu_s


def lag_summary(lags: list[float]) -> str:
    if len(lags) < 2:
        return "flood loop lag: n/a"
    ordered = sorted(lags)
    return (f"flood loop lag p50 {1000 * statistics.median(ordered):.0f} ms, "
            f"p95 {1000 * statistics.quantiles(ordered, n=20, method='inclusive')[-1]:.0f} ms, max {1000 * ordered[-1]:.0f} ms")


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f}"


def _slowest(latencies_s: list[float]) -> str:
    return _ms(max(latencies_s)) if latencies_s else "-"


def summary(name: str, outcomes: list[tuple], ok, refused) -> str:
    rejected = sorted(t for code, t, _ in outcomes if code == refused)
    served = [t for code, t, _ in outcomes if code == ok]
    gated = [t for code, t, by_gate in outcomes if code == refused and by_gate]
    by_serve = [t for code, t, by_gate in outcomes if code == refused and not by_gate]
    others = sorted({str(code) for code, _, _ in outcomes} - {str(ok), str(refused)})
    p95 = statistics.quantiles(rejected, n=20, method="inclusive")[-1] if len(rejected) > 1 else float("nan")
    refusals = (f"refused {len(rejected)} ({len(gated)} by the gate, slowest {_slowest(gated)} ms; "
                f"by Serve slowest {_slowest(by_serve)} ms), p50 {_ms(statistics.median(rejected))} ms, "
                f"p95 {_ms(p95)} ms, max {_ms(rejected[-1])} ms") if rejected else "refused 0"
    answered = f"served {len(served)}, p50 {_ms(statistics.median(served))} ms" if served else "served 0"
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
    p.add_argument("--probe-interval-ms", type=float, default=100.0,
                   help="the probe's period: one call per period from a process of its own")
    p.add_argument("--flood-niceness", type=int, default=RAY_WORKER_NICENESS,
                   help="the flood's niceness (default: that of Ray's workers, so the flood gets an equal share "
                        "with the proxy and the controllers; at 0 it takes the CPU from them). The probe keeps "
                        "this process's niceness, as a client on another machine uses none of the server's CPU")
    p.add_argument("--apis", nargs="+", choices=("http", "grpc"), default=("http", "grpc"),
                   help="the APIs each round floods, in this order: HTTP then gRPC")
    p.add_argument("--http-client", choices=("aiohttp", "httpx"), default="aiohttp",
                   help="the HTTP flood's client library (aiohttp spends less of the shared CPU per call)")
    p.add_argument("--retry-jitter", type=float, default=0.2,
                   help="a flood client waits 0.5 s times a uniform factor in 1 +- this after a refusal "
                        "(gRPC's own backoff jitter is 0.2; 0 retries in lock step, in bursts)")
    args = p.parse_args(argv)
    if args.clients < 1 or not 0 < args.duration_s <= 600 or not 1 <= args.rounds <= 20 or args.max_tokens < 1:
        p.error("need --clients >= 1, 0 < --duration-s <= 600, 1 <= --rounds <= 20, --max-tokens >= 1")
    if not 10 <= args.probe_interval_ms <= 10_000:
        p.error("need 10 <= --probe-interval-ms <= 10000")
    if not 0 <= args.flood_niceness <= 19:
        p.error("need 0 <= --flood-niceness <= 19")
    if not 0 <= args.retry_jitter < 1:
        p.error("need 0 <= --retry-jitter < 1")
    for host in (args.http_url.split("//", 1)[-1].split(":")[0], args.grpc.split(":")[0]):
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            p.error(f"{host}: a flood goes to a loopback address only")
    for round_index in range(args.rounds):
        for api, name in (("http", "HTTP"), ("grpc", "gRPC")):
            if api not in args.apis:
                continue
            outcomes, lags, probed, cpu_s = flood_round(api, args)
            cpu = f"flood CPU {1000 * cpu_s / max(1, len(outcomes)):.1f} ms per call"
            print(f"{summary(f'{name} round {round_index + 1}', outcomes, OK[api], REFUSED[api])}; "
                  f"{lag_summary(lags)}; {cpu}", flush=True)
            print(summary(f"  {name} probe", probed, OK[api], REFUSED[api]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
