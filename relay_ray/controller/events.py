"""What the relay loop emits while a request runs, and its final result."""

from __future__ import annotations

from dataclasses import dataclass

from relay_ray.types import RelayStats, SegmentRecord, Tier


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New text of the running segment (streamed only when asked for)."""

    segment_index: int
    tier: Tier
    text: str


@dataclass(frozen=True, slots=True)
class SegmentFinished:
    record: SegmentRecord


@dataclass(frozen=True, slots=True)
class RelayResult:
    """The whole answer: text, committed token ids (token-id mode), segments, statistics."""

    request_id: str
    text: str
    token_ids: tuple[int, ...]
    segments: tuple[SegmentRecord, ...]
    stats: RelayStats


RelayEvent = TextDelta | SegmentFinished | RelayResult
