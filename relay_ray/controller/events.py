"""What the relay loop emits while a request runs, and its final result."""

from __future__ import annotations

from dataclasses import dataclass

from relay_ray.types import RelayStats, SegmentRecord, Tier


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New text of the running segment (streamed only when asked for): final, never taken
    back. ``token_ids`` are the tokens it decodes from (the writing tier's tokenizer)."""

    segment_index: int
    tier: Tier
    text: str
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SegmentFinished:
    """A segment ended; ``resume_token`` (when the controller has a resume secret) lets a
    client resume the request from here on any controller replica."""

    record: SegmentRecord
    resume_token: bytes = b""
    token_ids: tuple[int, ...] = ()  # the segment's committed ids (token-id handoff)


@dataclass(frozen=True, slots=True)
class RelayResult:
    """The whole answer: text, committed token ids (token-id mode), segments, statistics."""

    request_id: str
    text: str
    token_ids: tuple[int, ...]
    segments: tuple[SegmentRecord, ...]
    stats: RelayStats


RelayEvent = TextDelta | SegmentFinished | RelayResult
