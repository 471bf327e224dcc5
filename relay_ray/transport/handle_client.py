"""TierClient over a Ray Serve ``DeploymentHandle`` (the in-cluster default).

Segment jobs carry the request id as Serve ``session_id``; tier deployments route with
Serve's ``ConsistentHashRouter``, so every segment of a request lands on the same replica
while it is healthy (its prefix cache holds the request's blocks). Ray and Serve failures
become relay errors (``transport.errors``); closing a stream cancels the call on the replica.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from relay_ray.transport.errors import from_ray
from relay_ray.types import PreparedPrompt, PromptInput, SegmentDelta, SegmentJob, SegmentResult, TierInfo


class HandleTierClient:
    def __init__(self, handle) -> None:
        self._handle = handle
        self._stream = handle.options(stream=True)

    async def describe(self) -> TierInfo:
        try:
            return await self._handle.describe.remote()
        except Exception as exc:
            raise from_ray(exc, "describe") from exc

    async def prepare(self, prompt: PromptInput) -> PreparedPrompt:
        try:
            return await self._handle.prepare.remote(prompt)
        except Exception as exc:
            raise from_ray(exc, "prepare") from exc

    async def stream_segment(self, job: SegmentJob) -> AsyncIterator[SegmentDelta | SegmentResult]:
        if job.stream_interval_tokens <= 0 and job.stream_block_tokens <= 0:  # one response: cheaper
            response = self._handle.options(session_id=job.request_id).run_segment.remote(job)
            done = False
            try:
                result = await response
                done = True
            except Exception as exc:
                raise from_ray(exc, "run_segment") from exc
            finally:
                if not done:  # cancelled (client gone, deadline): stop the replica's work too
                    response.cancel()
            yield result
            return
        responses = self._stream.options(session_id=job.request_id).stream_segment.remote(job)
        done = False
        try:
            async for item in responses:
                done = isinstance(item, SegmentResult)  # the last item: nothing left to cancel
                yield item
            done = True
        except Exception as exc:
            raise from_ray(exc, "stream_segment") from exc
        finally:
            if not done:
                responses.cancel()
