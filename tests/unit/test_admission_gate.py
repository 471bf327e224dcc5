"""The proxy's admission gate (relay_ray/rpc/admission_gate.py) without Ray: limits from
announcements, counting per application, refusing over the limit at once."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from relay_ray.rpc.admission_gate import (STALE_S, AdmissionCounter, Announcement, ProxyGate, limits_of)


def test_limits_sum_running_slots_over_live_replicas_plus_one_queue():
    now = 1000.0
    announcements = [Announcement("relay", 4, 4, now - 1), Announcement("relay", 4, 4, now - 2),
                     Announcement("edge", 2, 3, now), Announcement("relay", 4, 4, now - STALE_S - 1),
                     Announcement("open", 8, -1, now)]
    # two live relay replicas (the third is stale), one edge replica, "open" queues without bound
    assert limits_of(announcements, now) == {"relay": 4 + 4 + 4, "edge": 2 + 3}


def test_an_announcement_round_trips():
    a = Announcement("relay", 256, 512, 12.5)
    assert Announcement.parse(a.value()) == a
    assert a.key("r1") == b"relay_ray/admission/relay/r1"


def test_the_counter_refuses_at_the_limit_and_frees_slots():
    counter = AdmissionCounter()
    counter.limits = {"edge": 2}
    assert counter.try_enter("edge") and counter.try_enter("edge")
    assert not counter.try_enter("edge")
    assert counter.try_enter("other") and counter.try_enter(None)  # no known limit: Serve decides
    counter.leave("edge")
    assert counter.try_enter("edge")


def test_the_application_comes_from_metadata_or_is_the_only_one():
    counter = AdmissionCounter()
    counter.limits = {"edge": 2}
    assert counter.app_of((("application", "x"),)) == "x"
    assert counter.app_of(()) == "edge"
    counter.limits = {"edge": 2, "relay": 8}
    assert counter.app_of(()) is None


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self, app: str) -> None:
        self.metadata = (("application", app),)
        self.aborted: tuple | None = None

    def invocation_metadata(self):
        return self.metadata

    async def abort(self, code, details):
        self.aborted = (code, details)
        raise _Aborted


def test_the_gate_refuses_over_the_limit_without_calling_serve_and_counts_streams():
    async def scenario():
        gate = ProxyGate(read=lambda: [Announcement("edge", 1, 1, 0.0)], clock=lambda: 0.0)
        release = asyncio.Event()
        calls = []

        async def serve_unary(request, context):
            calls.append(request)
            await release.wait()
            return b"ok"

        async def serve_stream(request, context):
            calls.append(request)
            await release.wait()
            yield b"a"

        unary, stream = gate.wrap(serve_unary, streaming=False), gate.wrap(serve_stream, streaming=True)
        first = asyncio.ensure_future(unary("u1", _Context("edge")))
        await asyncio.sleep(0.05)  # the limits' refresh (a thread) has run
        assert gate.counter.limits == {"edge": 2}
        second = asyncio.ensure_future(stream("s1", _Context("edge")).__anext__())
        await asyncio.sleep(0)
        refused = _Context("edge")
        with pytest.raises(_Aborted):
            await unary("u2", refused)
        assert refused.aborted[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert calls == ["u1", "s1"]
        release.set()
        assert await first == b"ok" and await second == b"a"
        return gate

    gate = asyncio.run(scenario())
    assert gate.counter.in_flight["edge"] <= 1  # the unary call left; the stream was not closed yet


def test_a_failing_read_keeps_calls_flowing():
    async def scenario():
        def broken():
            raise OSError("no GCS")

        gate = ProxyGate(read=broken, clock=lambda: 0.0)

        async def serve_unary(request, context):
            return b"ok"

        unary = gate.wrap(serve_unary, streaming=False)
        results = [await unary(i, _Context("edge")) for i in range(3)]
        await asyncio.sleep(0.05)
        return results, gate.counter.limits

    results, limits = asyncio.run(scenario())
    assert results == [b"ok"] * 3 and limits == {}
