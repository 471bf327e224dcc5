"""Transport 'direct': first segment through the Serve handle, the rest over gRPC to the
replica that answered; back to the handle when that replica is gone."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from relay_ray.transport.direct_client import DirectTierClient
from relay_ray.rpc.segment_server import start_segment_server
from relay_ray.types import SegmentJob, SegmentResult, StopRule, Tier
from tests.unit.fakes import ScriptedTier

VOCAB = ["</s>", "Q: ", "a", " b"]
DOC = [2, 3] * 20


class StampingTier(ScriptedTier):
    """A scripted replica that stamps its endpoint on results, as TierServer does."""

    endpoint = ""

    async def stream_segment(self, job):
        async for item in super().stream_segment(job):
            yield replace(item, endpoint=self.endpoint) if isinstance(item, SegmentResult) else item


class FakeHandle:
    """Stands in for HandleTierClient: every call it gets went through 'Serve'."""

    def __init__(self, replica: StampingTier) -> None:
        self.replica, self.calls = replica, []

    async def stream_segment(self, job):
        self.calls.append(job.segment_index)
        async for item in self.replica.stream_segment(job):
            yield item


async def _result(client: DirectTierClient, index: int) -> SegmentResult:
    job = SegmentJob("req-1", index, StopRule(max_new_tokens=3), prefix_token_ids=(1,) + tuple(DOC[:index * 3]))
    items = [item async for item in client.stream_segment(job)]
    return items[-1]


def test_later_segments_go_straight_to_the_replica_and_fall_back_when_it_is_gone():
    async def go():
        replica = StampingTier(Tier.LARGE, VOCAB, DOC)
        server, port = await start_segment_server(replica, "127.0.0.1", 0)
        replica.endpoint = f"127.0.0.1:{port}"
        handle = FakeHandle(replica)
        client = DirectTierClient(handle)
        first = await _result(client, 0)
        second = await _result(client, 1)
        assert handle.calls == [0]  # only the first segment went through Serve
        assert list(first.token_ids + second.token_ids) == DOC[:6]
        assert [j.segment_index for j in replica.jobs] == [0, 1]  # both ran on the same replica
        await server.stop(None)  # the replica goes away
        third = await _result(client, 2)
        assert handle.calls == [0, 2] and list(third.token_ids) == DOC[6:9]

    asyncio.run(go())
