"""One prompt's relay as the OpenAI edge runs it: the text pieces as they may be sent, then
the prompt's :class:`~relay_ray.rpc.openai_convert.Answer`. A stop sequence (the request's
``stop``, found by :class:`StopScanner`) cuts the text and stops the relay at once; the cut
answer's token counts then come from the large tier's tokenizer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from relay_ray.controller import RelayController, RelayResult
from relay_ray.controller.events import SegmentFinished, TextDelta
from relay_ray.rpc import openai_convert as oc
from relay_ray.types import PromptInput, RelayRequest, Tier

logger = logging.getLogger(__name__)


class PromptRunner:
    """Runs prompts on one :class:`RelayController`."""

    def __init__(self, controller: RelayController) -> None:
        self.controller = controller
        self._empty_text_tokens: int | None = None  # special tokens the tokenizer adds to any text

    async def run(self, request: RelayRequest, stops: tuple[str, ...], stream_text: bool,
                  timeout_s: float | None) -> AsyncIterator[oc.Piece | oc.Answer]:
        """Text pieces as they may be sent, then the prompt's :class:`Answer`. A stop
        sequence cuts the text and stops the relay at once. ``timeout_s`` bounds the relay
        (the controller's deadline: segment jobs and engine requests end with it)."""
        scanner = StopScanner(stops)
        records, sent, streamed = [], [], []
        events = self.controller.generate(request, stream_text=stream_text, timeout_s=timeout_s)
        try:
            async for event in events:
                if isinstance(event, SegmentFinished):
                    records.append(event.record)
                    continue
                if isinstance(event, TextDelta):
                    streamed.append(event.text)
                    pieces = scanner.push((event.segment_index, event.tier), event.text)
                else:
                    pieces = scanner.push(*_unstreamed(event, "".join(streamed))) if stream_text else []
                    pieces += scanner.flush()
                for piece in pieces:
                    sent.append(piece)
                    yield piece
                if scanner.matched:
                    await events.aclose()  # stop the tiers before counting
                    yield await self._cut_answer(request, sent, records)
                    return
                if isinstance(event, RelayResult):
                    yield oc.Answer.of(event)
                    return
        finally:
            await events.aclose()

    async def _cut_answer(self, request: RelayRequest, sent: list[oc.Piece], records: list) -> oc.Answer:
        """The answer of a relay a stop sequence cut: its token counts come from the large
        tier's tokenizer (the relay did not finish, so it reported none)."""
        text = "".join(t for _, t in sent)
        prompt_tokens = records[0].num_prompt_tokens if records else await self._count(request.prompt)
        completion_tokens = await self._count(PromptInput(text=text)) - await self._empty_tokens() if text else 0
        return oc.Answer(text, oc.STOP_SEQUENCE, prompt_tokens, completion_tokens, None,
                         oc.cut_segments(sent, records))

    async def _count(self, prompt: PromptInput) -> int:
        return len((await self.controller.tiers[Tier.LARGE].prepare(prompt)).token_ids)

    async def _empty_tokens(self) -> int:
        if self._empty_text_tokens is None:
            self._empty_text_tokens = await self._count(PromptInput(text=""))
        return self._empty_text_tokens


class StopScanner:
    """Cuts streamed text before the first stop sequence, holding back only what could
    still become the start of one. Text arrives and leaves in tagged pieces (the tag says
    which segment wrote it), so a cut keeps each piece's attribution."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self._hold = max((len(s) for s in stops), default=1) - 1
        self._pending: list[tuple[object, str]] = []
        self.matched = False

    def push(self, tag: object, text: str) -> list[tuple[object, str]]:
        """Add text; returns the pieces that are safe to send (all of them if no stops)."""
        if self.matched:
            return []
        if not self.stops:
            return [(tag, text)] if text else []
        self._pending.append((tag, text))
        buffered = "".join(t for _, t in self._pending)
        cut = min((i for i in (buffered.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.matched = True
            return self._take(cut, drop_rest=True)
        return self._take(max(0, len(buffered) - self._hold))

    def flush(self) -> list[tuple[object, str]]:
        """The held-back text, once the answer is complete."""
        return [] if self.matched else self._take(sum(len(t) for _, t in self._pending))

    def _take(self, num_chars: int, drop_rest: bool = False) -> list[tuple[object, str]]:
        out, rest = [], []
        for tag, text in self._pending:
            if num_chars >= len(text):
                out.append((tag, text))
                num_chars -= len(text)
            else:
                if num_chars:
                    out.append((tag, text[:num_chars]))
                rest.append((tag, text[num_chars:]))
                num_chars = 0
        self._pending = [] if drop_rest else [(t, s) for t, s in rest if s]
        return [(t, s) for t, s in out if s]


def _unstreamed(result: RelayResult, streamed: str) -> tuple[tuple[int, Tier], str]:
    """The tagged end of ``result.text`` no delta carried (text no model wrote: RelayGen's
    ``</think>`` on budget exhaustion), so that the deltas always add up to the answer."""
    last = result.segments[-1] if result.segments else None
    tag = (last.index, last.tier) if last else (0, Tier.LARGE)
    if result.text.startswith(streamed):
        return tag, result.text[len(streamed):]
    logger.warning("request %s: deltas sent are not a prefix of the answer (text taken back)", result.request_id)
    return tag, ""
