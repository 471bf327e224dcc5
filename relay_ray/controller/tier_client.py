"""The transport-neutral interface the controller uses to reach a tier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from relay_ray.types import PreparedPrompt, PromptInput, SegmentDelta, SegmentJob, SegmentResult, TierInfo


@runtime_checkable
class TierClient(Protocol):
    """One tier (all its replicas) as seen from the controller.

    Implementations in :mod:`relay_ray.transport`: Serve deployment handles, direct gRPC to
    the replica Serve picked, fixed ``SegmentService`` endpoints. Jobs with the same
    ``request_id`` go to the same replica while it is healthy (prefix-cache affinity).
    """

    async def describe(self) -> TierInfo:
        """Model, tokenizer fingerprint and context length of the tier."""
        ...

    async def prepare(self, prompt: PromptInput) -> PreparedPrompt:
        """Render (chat template) and tokenize a prompt with this tier's tokenizer."""
        ...

    def stream_segment(self, job: SegmentJob) -> AsyncIterator[SegmentDelta | SegmentResult]:
        """Run a segment job; yields optional deltas, then exactly one final result."""
        ...
