"""TierClient over an engine in the same process (standalone servers, scripts, tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from relay_ray.engines.vllm_tier import VllmTierEngine
from relay_ray.types import PreparedPrompt, PromptInput, SegmentDelta, SegmentJob, SegmentResult, TierInfo


class LocalTierClient:
    """Calls a :class:`VllmTierEngine` directly; no transport."""

    def __init__(self, engine: VllmTierEngine) -> None:
        self.engine = engine

    async def describe(self) -> TierInfo:
        return self.engine.describe()

    async def prepare(self, prompt: PromptInput) -> PreparedPrompt:
        return self.engine.prepare(prompt)

    async def stream_segment(self, job: SegmentJob) -> AsyncIterator[SegmentDelta | SegmentResult]:
        async for item in self.engine.stream_segment(job):
            yield item
