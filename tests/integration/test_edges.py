"""The service's edges on the ``edge`` application (admission limit 4 running + 4 queued):
overload is refused fast and cleanly, deadlines bound stopped engines, cancelled streams
leave no work behind."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import signal
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from relay_ray.client import build_request
from relay_ray.rpc.admission_gate import REFUSAL
from relay_ray.types import Sampling
from relay_ray.v1 import relay_pb2_grpc as rpb_grpc
from tests.integration.conftest import EDGE_ONGOING, EDGE_QUEUED, EDGE_TOKEN, at_ray_worker_niceness
from relay_ray.serve.replicas import engine_loads, engine_of, replica_pids, rss_mib

pytestmark = pytest.mark.integration
APP = "edge"
LIMIT = EDGE_ONGOING + EDGE_QUEUED
METADATA = (("application", APP), ("authorization", f"Bearer {EDGE_TOKEN}"))


async def _flood(address: str, num_clients: int, duration_s: float) -> list[tuple[str, float, str]]:
    """``num_clients`` clients sending unary requests for ``duration_s`` (starts spread over the
    first half second; after RESOURCE_EXHAUSTED a client waits 0.5 s +-20%, as clients should:
    gRPC jitters its own backoff by 20%, and clients retrying in lock step arrive in bursts of up
    to 30 calls that the last of them waits through, docs/reliability.md); (status, seconds,
    details) of every call."""
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 60)  # the first calls time no connect
        stub = rpb_grpc.RelayServiceStub(channel)
        msg = build_request("So we add 3 and 4, then we add the result to itself.", "small-only",
                            max_new_tokens=200)
        end = time.monotonic() + duration_s
        outcomes: list[tuple[str, float, str]] = []

        async def client(k: int) -> None:
            await asyncio.sleep(0.5 * k / num_clients)
            while time.monotonic() < end:
                started = time.perf_counter()
                try:
                    await stub.Generate(msg, metadata=METADATA, timeout=120)
                    outcomes.append(("OK", time.perf_counter() - started, ""))
                except grpc.aio.AioRpcError as exc:
                    outcomes.append((exc.code().name, time.perf_counter() - started, exc.details() or ""))
                    await asyncio.sleep(random.uniform(0.4, 0.6))
        await asyncio.gather(*(client(k) for k in range(num_clients)))
        return outcomes


def _probe(address: str, duration_s: float, interval_s: float, ready, go, results) -> None:
    """One client in a process of its own, a call every ``interval_s`` for ``duration_s`` from
    ``go``: the flood's clients time their calls on the flood's one busy event loop, this one
    times only its own, as a client on another machine would. It connects and sets ``ready``
    first, and stays until it is terminated: a process importing or exiting at normal priority
    takes the two cores from the server and the flood (their calls then wait 100-300 ms)."""
    msg = build_request("So we add 3 and 4, then we add the result to itself.", "small-only", max_new_tokens=200)
    outcomes: list[tuple[str, float]] = []
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = rpb_grpc.RelayServiceStub(channel)
        ready.set()
        go.wait(timeout=120)
        end_s = time.monotonic() + duration_s
        while time.monotonic() < end_s:
            started = time.perf_counter()
            try:
                stub.Generate(msg, metadata=METADATA, timeout=120)
                outcomes.append(("OK", time.perf_counter() - started))
            except grpc.RpcError as exc:
                outcomes.append((exc.code().name, time.perf_counter() - started))
            time.sleep(max(0.0, interval_s - (time.perf_counter() - started)))
        results.put(outcomes)
        time.sleep(300)  # until terminated (bounded)


def test_ten_times_the_admission_limit_is_refused_fast(relay_server):
    (controller,) = replica_pids(APP, "RelayController")
    asyncio.run(_flood(relay_server.address, 2, 1.0))  # warm
    rss_before = rss_mib(controller)
    spawn = multiprocessing.get_context("spawn")
    ready, go, probe_results = spawn.Event(), spawn.Event(), spawn.Queue()
    prober = spawn.Process(target=_probe, daemon=True,
                           args=(relay_server.address, 15.0, 0.1, ready, go, probe_results))
    prober.start()

    def flood() -> list[tuple[str, float, str]]:
        # the flood at Ray's workers' niceness, an equal share with the proxy and the controller;
        # the probe stays at this process's: a client elsewhere takes none of the server's CPU
        at_ray_worker_niceness()
        return asyncio.run(_flood(relay_server.address, 10 * LIMIT, 15.0))

    try:
        assert ready.wait(timeout=120), "the probe did not start"
        go.set()
        with ThreadPoolExecutor(1) as pool:
            outcomes = pool.submit(flood).result()
        probed = probe_results.get(timeout=180)
    finally:
        prober.terminate()
        prober.join(timeout=10)
    codes = {code for code, _, _ in outcomes}
    assert codes <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    rejected = sorted(t for code, t, _ in outcomes if code == "RESOURCE_EXHAUSTED")
    served = [t for code, t, _ in outcomes if code == "OK"]
    # the proxy's admission gate refuses most calls before Serve routes them (rpc/admission_gate.py);
    # Serve's own backpressure the rest (a call leaves the gate a moment before its replica slot frees)
    by_gate = sum(details == REFUSAL for code, _, details in outcomes if code == "RESOURCE_EXHAUSTED")
    assert len(served) >= LIMIT and len(rejected) >= 10 * LIMIT
    # Refused at once, not after a wait in a queue: a queued call waits for a running one to
    # finish, so the bound is the served calls' own latency in this run (machines here differ 3x
    # in speed; an absolute bound failed on a slower one). The absolute figures are printed and
    # recorded in docs/reliability.md.
    served_p50 = statistics.median(served)
    rejected_p50, rejected_p95 = statistics.median(rejected), statistics.quantiles(rejected, n=20)[-1]
    print(f"\nrejected: {len(rejected)} ({by_gate} by the proxy's gate), "
          f"p50 {rejected_p50 * 1000:.0f} ms, p95 {rejected_p95 * 1000:.0f} ms, "
          f"max {rejected[-1] * 1000:.0f} ms; "
          f"served: {len(served)}, p50 {served_p50 * 1000:.0f} ms")
    assert rejected_p95 < served_p50 / 5 and rejected[-1] < served_p50, (rejected[-5:], served_p50)
    # The 100 ms, asserted in absolute terms for the typical refusal: 3 ms with the gate
    # and 10 ms without it on a machine twice as slow as the fast ones (docs/reliability.md).
    assert rejected_p50 < 0.1, rejected_p50
    # ... and for 95% of the refusals a client of its own sees (2026-12-03, Zen 5, five runs with
    # the flood at Ray's niceness: the probe's p95 11-31 ms, its slowest 26-59 ms; with Ray's workers
    # at 0 and the engines at 19, AMX Xeon, 24 floods: p95 6-14 ms, slowest 7-59 ms; docs/reliability.md,
    # "Whose tail").
    probe_rejected = sorted(t for code, t in probed if code == "RESOURCE_EXHAUSTED")
    assert {code for code, _ in probed} <= {"OK", "RESOURCE_EXHAUSTED"}, probed
    assert len(probe_rejected) >= 20, (len(probe_rejected), probed)
    probe_p95 = statistics.quantiles(probe_rejected, n=20)[-1]
    print(f"probe: {len(probe_rejected)} rejected, p50 {statistics.median(probe_rejected) * 1000:.0f} ms, "
          f"p95 {probe_p95 * 1000:.0f} ms, max {probe_rejected[-1] * 1000:.0f} ms; "
          f"{len(probed) - len(probe_rejected)} served")
    assert probe_p95 < 0.1, probe_rejected[-5:]
    assert rss_mib(controller) - rss_before < 50
    assert by_gate >= 0.5 * len(rejected), (by_gate, len(rejected))


def test_a_stopped_engine_gives_deadline_exceeded_in_time(relay_server):
    (replica,) = replica_pids(APP, "SmallTier")
    engine = engine_of(replica)
    timeout_s = 3.0
    engine.send_signal(signal.SIGSTOP)
    try:
        with relay_server.client(APP) as client:
            client.timeout_s = timeout_s
            started = time.perf_counter()
            with pytest.raises(grpc.RpcError) as failed:
                client.generate(build_request("So we add 1 and 2.", "small-only", max_new_tokens=32))
            elapsed = time.perf_counter() - started
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert elapsed < timeout_s + 1.0
        time.sleep(1.0)
        # The replica gave up the request itself (it did not wait for the stopped engine).
        assert [load["unfinished_requests"] for load in engine_loads(APP, "SmallTier")] == [0]
    finally:
        engine.send_signal(signal.SIGCONT)
    with relay_server.client(APP) as client:  # and it serves again
        assert client.generate(build_request("So we add 1 and 2.", "small-only", max_new_tokens=8)).text


def _busy_requests(app: str) -> set[str]:
    """Relay requests with a job on a tier engine of ``app`` ("?" for engine work with no job)."""
    loads = engine_loads(app, "LargeTier") + engine_loads(app, "SmallTier")
    busy = {job.split("/")[0] for load in loads for job in load["jobs"]}
    if not busy and any(load["unfinished_requests"] or load["segments"] for load in loads):
        busy.add("?")
    return busy


def _idle_within(app: str, timeout_s: float) -> set[str]:
    """Empty once both tiers stay idle for three polls in a row (a request between two segments
    is idle for a moment); otherwise the requests still running at the timeout."""
    deadline, idle_polls = time.monotonic() + timeout_s, 0
    while True:
        busy = _busy_requests(app)
        idle_polls = 0 if busy else idle_polls + 1
        if idle_polls == 3:
            return set()
        if time.monotonic() > deadline:
            return busy or {"?"}
        time.sleep(0.05)


def test_cancelled_streams_leave_both_engines_idle(relay_server):
    """50 relay streams cancelled at random points, four at a time: after each batch both tiers'
    engines are idle within 2 s (prefill-ahead warm-ups included: the ``pair`` app has them on).

    The streams go through a Serve handle (what the gRPC proxy calls). Through Serve 2.60's gRPC
    proxy itself about one cancel in ten is lost when the client cancels while the proxy is writing
    a message (docs/reliability.md); a client deadline still ends such a request."""
    from ray import serve

    app = "pair"
    handle = serve.get_app_handle(app).options(stream=True)
    rng = random.Random(5)
    cancelled, survivors = [], []

    def one(i: int) -> None:
        # 400 tokens, EOS ignored: a request whose cancel is lost runs for seconds after the check
        msg = build_request(f"So we add {i} and 4, then the result to itself.", "fixed-ratio",
                            {"large_tokens": 5, "small_tokens": 7}, Sampling(ignore_eos=True),
                            max_new_tokens=400, request_id=f"cancel-{i}")
        stream = handle.GenerateStream.remote(msg)
        stop_after = rng.randint(0, 6)
        try:
            for n, _ in enumerate(stream):
                if n >= stop_after:
                    break
        finally:
            stream.cancel()
            cancelled.append(i)

    for batch in range(0, 50, 4):
        threads = [threading.Thread(target=one, args=(i,)) for i in range(batch, min(50, batch + 4))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        if busy := _idle_within(app, 2.0):
            survivors.append(sorted(busy))
            _idle_within(app, 60.0)  # let them end: the next batch is checked on its own
    assert len(cancelled) == 50
    assert survivors == []
