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
from relay_ray.types import PreparedPrompt, PromptInput, SegmentDelta, SegmentJob, SegmentResult, TierInfo
from relay_ray.v1 import segment_pb2 as spb
from relay_ray.v1 import segment_pb2_grpc as spb_grpc

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


class GrpcTierClient:
    def __init__(self, endpoints: Sequence[str], timeout_s: float | None = 600.0) -> None:
        if not endpoints:
            raise ValueError("GrpcTierClient needs at least one endpoint")
        self.endpoints = tuple(endpoints)
        self.timeout_s = timeout_s
        self._stubs = None

    def _all_stubs(self) -> list:
        if self._stubs is None:  # channels bind to the running event loop: create lazily
            opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
            self._stubs = [spb_grpc.SegmentServiceStub(grpc.aio.insecure_channel(e, options=opts))
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
                return await getattr(stub, method)(msg, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _RETRYABLE:
                    raise as_error(exc) from None
                last = exc
        raise TierUnavailableError(f"no tier endpoint answered {method}: {last.details() if last else ''}")

    async def stream_segment(self, job: SegmentJob) -> AsyncIterator[SegmentDelta | SegmentResult]:
        msg = convert.job_to_pb(job)
        last = None
        for stub in self._ordered(job.request_id):
            started = False
            try:
                async for update in stub.RunSegment(msg, timeout=self.timeout_s):
                    started = True
                    yield convert.update_from_pb(update)
                return
            except grpc.aio.AioRpcError as exc:
                if started or exc.code() not in _RETRYABLE:
                    raise as_error(exc) from None
                last = exc
        raise TierUnavailableError(f"no tier endpoint answered RunSegment: {last.details() if last else ''}")


def as_error(exc: grpc.aio.AioRpcError) -> Exception:
    """A failed tier call as the controller's error types (bad job vs. tier unavailable)."""
    from relay_ray.errors import RelayInputError

    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return RelayInputError("segment", exc.details() or "invalid segment job")
    return TierUnavailableError(f"tier call failed with {exc.code().name}: {exc.details()}")
