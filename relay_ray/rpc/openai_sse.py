"""A streamed OpenAI answer as server-sent events: the prompts' relays merged into one stream
(each item tagged with its choice index), then written as ``chat.completion.chunk`` or
``text_completion`` chunks, the usage chunk when asked for, and ``data: [DONE]``.

The HTTP status is sent before the first event: a failure afterwards ends the stream with an
OpenAI error event (and ``data: [DONE]``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from pydantic import BaseModel

from relay_ray.rpc import openai_convert as oc
from relay_ray.rpc.openai_errors import error_for
from relay_ray.rpc.openai_schema import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    Completion,
    CompletionChoice,
    CompletionRequest,
    RelayChoiceInfo,
)

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def sse(model: BaseModel) -> str:
    """One server-sent event carrying ``model`` as JSON."""
    return f"data: {model.model_dump_json()}\n\n"


@dataclass(frozen=True)
class _Chunks:
    """The chunks of one streamed answer: ``chat.completion.chunk`` objects for a chat request,
    ``text_completion`` objects otherwise, all with the answer's id, creation time and model."""

    req: CompletionRequest | ChatCompletionRequest
    ident: str
    created: int

    @property
    def chat(self) -> bool:
        return isinstance(self.req, ChatCompletionRequest)

    def choice(self, index: int, text: str | None, finish: str | None = None,
               relay: RelayChoiceInfo | None = None, role: bool = False) -> str:
        """The event of one choice's text (or its end, with ``finish``)."""
        if self.chat:
            delta = ChatDelta(role="assistant" if role else None, content=text)
            return sse(ChatCompletionChunk(id=self.ident, created=self.created, model=self.req.model, choices=[
                ChatChunkChoice(index=index, delta=delta, finish_reason=finish, relay=relay)]))
        return sse(Completion(id=self.ident, created=self.created, model=self.req.model, choices=[
            CompletionChoice(index=index, text=text or "", finish_reason=finish, relay=relay)]))

    def usage(self, answers: list[oc.Answer]) -> str:
        """The last event with ``stream_options.include_usage``: no choices, the usage."""
        model = ChatCompletionChunk if self.chat else Completion
        return sse(model(id=self.ident, created=self.created, model=self.req.model, choices=[],
                         usage=oc.usage_of(answers)))


async def events(req: CompletionRequest | ChatCompletionRequest, request_id: str,
                 merged: AsyncIterator[tuple[int, oc.Piece | oc.Answer]], deadline: float | None,
                 param_of: Callable[[str], str], clock: Callable[[], float]) -> AsyncIterator[str]:
    """The server-sent events of ``merged`` (choice index, text piece or final answer) up to
    ``data: [DONE]``; waiting for an item past ``deadline`` (loop time) ends the stream with
    an error event, as any failure does. ``merged`` is closed in every case."""
    chat = isinstance(req, ChatCompletionRequest)
    want_segments = bool(req.relay and req.relay.segments)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    chunks = _Chunks(req, f"{'chatcmpl' if chat else 'cmpl'}-{request_id}", int(clock()))
    answers: dict[int, oc.Answer] = {}
    try:
        if chat:  # one choice (n = 1)
            yield chunks.choice(0, "", role=True)
        while True:
            async with asyncio.timeout_at(deadline):  # around the wait only, never a yield
                item = await anext(merged, None)
            if item is None:
                break
            index, value = item
            if isinstance(value, oc.Answer):
                answers[index] = value
                info = RelayChoiceInfo(segments=value.segments) if want_segments else None
                yield chunks.choice(index, None if chat else "", oc.finish_reason_out(value.finish), info)
            else:
                (segment_index, tier), text = value
                info = RelayChoiceInfo(tier=tier.value, segment_index=segment_index) if want_segments else None
                yield chunks.choice(index, text, relay=info)
        if include_usage:
            yield chunks.usage([answers[i] for i in sorted(answers)])
    except Exception as exc:  # the status is sent already: an error event ends the stream
        yield sse(error_for(exc, param_of, request_id).body())
    finally:
        await merged.aclose()
    yield DONE


async def prepend(first, rest: AsyncIterator) -> AsyncIterator:
    """``first``, then the items of ``rest`` (closed in every case)."""
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()


async def merge(streams: list[AsyncIterator]) -> AsyncIterator[tuple[int, object]]:
    """Items of several streams as they come, tagged with the stream's index; the first
    failure of any stream is raised (the others are stopped)."""
    if len(streams) == 1:
        try:
            async for item in streams[0]:
                yield 0, item
        finally:
            await streams[0].aclose()
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def feed(index: int, stream: AsyncIterator) -> None:
        try:
            async for item in stream:
                await queue.put((index, item))
            await queue.put((index, done))
        except Exception as exc:
            await queue.put((index, exc))
        finally:
            await stream.aclose()

    tasks = [asyncio.create_task(feed(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
