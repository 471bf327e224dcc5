"""A session's input chunks: how a segment is cut into them (the stop rule must not fire
inside one) and one chunk's outputs and times as the engine streams them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from relay_ray.types import StopRule

# vLLM finish reason of a chunk that ended on an end-of-sequence or stop token.
FINISH_STOP = "stop"


class SessionLost(Exception):
    """The session's engine request ended (aborted, engine error) before the chunk did."""


@dataclass(frozen=True, slots=True)
class ChunkSize:
    """How many tokens the next chunk may generate; ``exact``: the stop rule cannot end the
    segment inside it (only at its last token, or by EOS, which ends the chunk too)."""

    max_tokens: int
    exact: bool


def next_chunk(rule: StopRule, num_tokens: int, num_left: int, num_stepped: int, step_tokens: int) -> ChunkSize:
    """The next chunk of a segment that has ``num_tokens`` tokens (resumed ones included),
    may still generate ``num_left``, and ran ``num_stepped`` one-token chunks so far.

    No rule is evaluated before ``min_new_tokens`` tokens exist, so the tokens before the
    ``min_new_tokens``-th are one exact chunk; then ``step_tokens`` one-token chunks (short
    segments keep the session); then the rest as one chunk, which is not exact."""
    if num_left <= 0:
        raise ValueError("no tokens left to generate")
    if not rule.can_stop_early:
        return ChunkSize(num_left, True)
    before_rules = rule.min_new_tokens - 1 - num_tokens
    if before_rules > 0:
        return ChunkSize(min(before_rules, num_left), True)
    if num_stepped < step_tokens or num_left == 1:
        return ChunkSize(1, True)
    return ChunkSize(num_left, False)


def extends(context: Sequence[int], prefix: Sequence[int]) -> bool:
    """Whether ``prefix`` starts with ``context``."""
    return len(prefix) >= len(context) and list(prefix[:len(context)]) == list(context)


class Chunk:
    """One input chunk of a session: its outputs (as the engine streams them) and times."""

    def __init__(self, num_new_tokens: int, max_tokens: int, submitted_at: float) -> None:
        self.num_new_tokens = num_new_tokens
        self.max_tokens = max_tokens
        self.submitted_at = submitted_at
        self.started_at: float | None = None  # when the chunks before it had finished
        self.first_at: float | None = None  # first output
        self.done_at: float | None = None
        self.generated: list[int] = []
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self._outputs: asyncio.Queue = asyncio.Queue()

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def _add(self, out, token_ids: Sequence[int], now: float) -> None:
        if self.first_at is None:
            self.first_at = now
        self.generated.extend(token_ids)
        self._outputs.put_nowait(out)

    def _finish(self, reason: str, now: float) -> None:
        self.finish_reason, self.done_at = reason, now
        self._outputs.put_nowait(None)

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self._outputs.put_nowait(None)

    async def outputs(self) -> AsyncIterator:
        """The chunk's engine outputs until it finishes; raises :class:`SessionLost` if the
        session ended first."""
        while True:
            out = await self._outputs.get()
            if out is None:
                if self.error is not None:
                    raise SessionLost(str(self.error)) from self.error
                return
            yield out

    async def wait(self) -> None:
        async for _ in self.outputs():
            pass
