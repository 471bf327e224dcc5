"""TierClient over gRPC ``SegmentService`` channels (tiers outside the cluster, or any
process implementing the service).

Jobs of one request go to the endpoint its request id hashes to, so the same tier
process (and its prefix cache) serves all of them; a failing endpoint is skipped.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Sequence

import grpc

from relay_ray.errors import TierUnavailableError
from relay_ray.rpc import convert
from relay_ray.rpc.auth import TierSecret
from relay_ray.rpc.segment_server import MESSAGE_LIMITS
from relay_ray.transport.errors import from_grpc
from relay_ray.types import PreparedPrompt, PromptInput, SegmentDelta, SegmentJob, SegmentResult, TierInfo
from relay_ray.v1 import segment_pb2 as spb
from relay_ray.v1 import segment_pb2_grpc as spb_grpc

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
DEADLINE_GRACE_S = 1.0  # the tier enforces job.timeout_s itself; the call deadline is a backstop


def call_timeout_s(job: SegmentJob, default_s: float | None) -> float | None:
    """The gRPC deadline of a segment call: the job's own timeout plus a grace, else the default."""
    return job.timeout_s + DEADLINE_GRACE_S if job.timeout_s > 0 else default_s


class GrpcTierClient:
    def __init__(self, endpoints: Sequence[str], timeout_s: float | None = None,
                 secret: TierSecret | None = None) -> None:
        if not endpoints:
            raise ValueError("GrpcTierClient needs at least one endpoint")
        self.endpoints = tuple(endpoints)
        self.timeout_s = timeout_s
        self._metadata = secret.metadata() if secret else ()
        self._stubs = None

    def _all_stubs(self) -> list:
        if self._stubs is None:  # channels bind to the running event loop: create lazily
            self._stubs = [spb_grpc.SegmentServiceStub(grpc.aio.insecure_channel(e, options=list(MESSAGE_LIMITS)))
                           for e in self.endpoints]
        return self._stubs

    def _ordered(self, key: str) -> list:
        stubs = self._all_stubs()
        start = zlib.crc32(key.encode()) % len(stubs)
        return stubs[start:] + stubs[:start]

    async def describe(self) -> TierInfo:
        return convert.tier_info_from_pb(await self._unary("Describe", spb.DescribeRequest(), ""))

    async def prepare(self, prompt: PromptInput) -> PreparedPrompt:
        msg = convert.prompt_to_pb(prompt, spb.PrepareRequest())
        return convert.prepared_from_pb(await self._unary("Prepare", msg, prompt.text[:64]))

    async def _unary(self, method: str, msg, key: str):
        last = None
        for stub in self._ordered(key):
            try:
                return await getattr(stub, method)(msg, timeout=self.timeout_s or 60.0, metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _RETRYABLE:
                    raise from_grpc(exc, method) from None
                last = exc
        raise TierUnavailableError(f"no tier endpoint answered {method}: {last.details() if last else ''}")

    async def stream_segment(self, job: SegmentJob) -> AsyncIterator[SegmentDelta | SegmentResult]:
        msg = convert.job_to_pb(job)
        last = None
        for stub in self._ordered(job.request_id):
            started = False
            call = stub.RunSegment(msg, timeout=call_timeout_s(job, self.timeout_s), metadata=self._metadata)
            try:
                async for update in call:
                    started = True
                    yield convert.update_from_pb(update)
                return
            except grpc.aio.AioRpcError as exc:
                if started or exc.code() not in _RETRYABLE:
                    raise from_grpc(exc, "RunSegment") from None
                last = exc
            finally:
                call.cancel()  # no-op once finished; stops the tier's job if we were cancelled
        raise TierUnavailableError(f"no tier endpoint answered RunSegment: {last.details() if last else ''}")
