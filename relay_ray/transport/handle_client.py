"""TierClient over a Ray Serve ``DeploymentHandle`` (the in-cluster default).

Segment jobs carry the request id as Serve ``session_id``; tier deployments route with
Serve's ``ConsistentHashRouter``, so every segment of a request lands on the same replica
while it is healthy (its prefix cache holds the request's blocks).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from relay_ray.types import PreparedPrompt, PromptInput, SegmentDelta, SegmentJob, SegmentResult, TierInfo


class HandleTierClient:
    def __init__(self, handle) -> None:
        self._handle = handle
        self._stream = handle.options(stream=True)

    async def describe(self) -> TierInfo:
        return await self._handle.describe.remote()

    async def prepare(self, prompt: PromptInput) -> PreparedPrompt:
        return await self._handle.prepare.remote(prompt)

    async def stream_segment(self, job: SegmentJob) -> AsyncIterator[SegmentDelta | SegmentResult]:
        if job.stream_interval_tokens <= 0 and job.stream_block_tokens <= 0:  # one response: cheaper
            yield await self._handle.options(session_id=job.request_id).run_segment.remote(job)
            return
        async for item in self._stream.options(session_id=job.request_id).stream_segment.remote(job):
            yield item
