"""The service's edges on the ``edge`` application (admission limit 4 running + 4 queued):
overload is refused fast and cleanly, deadlines bound stopped engines, cancelled streams
leave no work behind."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time

import grpc
import pytest

from relay_ray.client import build_request
from relay_ray.v1 import relay_pb2_grpc as rpb_grpc
from tests.integration.conftest import EDGE_ONGOING, EDGE_QUEUED, EDGE_TOKEN
from relay_ray.serve.replicas import engine_loads, engine_of, replica_pids, rss_mib

pytestmark = pytest.mark.integration
APP = "edge"
LIMIT = EDGE_ONGOING + EDGE_QUEUED
METADATA = (("application", APP), ("authorization", f"Bearer {EDGE_TOKEN}"))


async def _flood(address: str, num_clients: int) -> list[tuple[str, float]]:
    """``num_clients`` concurrent unary requests; (status, seconds) of each."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpb_grpc.RelayServiceStub(channel)
        msg = build_request("So we add 3 and 4, then we add the result to itself.", "small-only",
                            max_new_tokens=200)

        async def one() -> tuple[str, float]:
            started = time.perf_counter()
            try:
                await stub.Generate(msg, metadata=METADATA, timeout=120)
                return "OK", time.perf_counter() - started
            except grpc.aio.AioRpcError as exc:
                return exc.code().name, time.perf_counter() - started
        return await asyncio.gather(*(one() for _ in range(num_clients)))


def test_ten_times_the_admission_limit_is_refused_fast(relay_server):
    (controller,) = replica_pids(APP, "RelayController")
    asyncio.run(_flood(relay_server.address, 2))  # warm
    rss_before = rss_mib(controller)
    outcomes = []
    for _ in range(3):
        outcomes += asyncio.run(_flood(relay_server.address, 10 * LIMIT))
    codes = {code for code, _ in outcomes}
    assert codes <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    rejected = [t for code, t in outcomes if code == "RESOURCE_EXHAUSTED"]
    served = [t for code, t in outcomes if code == "OK"]
    assert len(served) >= 3 * LIMIT and len(rejected) >= 3 * 8 * LIMIT
    assert max(rejected) < 0.1, sorted(rejected)[-5:]
    assert rss_mib(controller) - rss_before < 50


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


def test_cancelled_streams_leave_both_engines_idle(relay_server):
    rng = random.Random(5)
    channel = grpc.insecure_channel(relay_server.address)
    stub = rpb_grpc.RelayServiceStub(channel)
    cancelled = []

    def one(i: int) -> None:
        msg = build_request(f"So we add {i} and 4, then the result to itself.", "fixed-ratio",
                            {"large_tokens": 5, "small_tokens": 7}, max_new_tokens=300)
        call = stub.GenerateStream(msg, metadata=METADATA, timeout=120)
        stop_after = rng.randint(0, 6)
        try:
            for n, _ in enumerate(call):
                if n >= stop_after:
                    break
        finally:
            call.cancel()
            cancelled.append(i)

    try:
        for batch in range(0, 50, EDGE_ONGOING):
            threads = [threading.Thread(target=one, args=(i,)) for i in range(batch, min(50, batch + EDGE_ONGOING))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
    finally:
        channel.close()
    assert len(cancelled) == 50
    deadline = time.monotonic() + 2.0
    while True:
        loads = engine_loads(APP, "LargeTier") + engine_loads(APP, "SmallTier")
        idle = all(load["unfinished_requests"] == 0 and load["segments"] == 0 for load in loads)
        if idle or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert idle, loads
