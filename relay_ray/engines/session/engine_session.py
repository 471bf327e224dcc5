"""One resumable engine request (vLLM streaming input) holding one relay request's KV."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence

from relay_ray.engines.session.chunks import Chunk, SessionLost


class EngineSession:
    """One resumable engine request holding one relay request's KV cache.

    ``context`` is what the engine's KV holds once the submitted chunks have run: their new
    tokens are added at submission, their kept generated tokens (all but the last) when they
    finish. A chunk may only be queued behind chunks that generate one token (whose
    generated tokens are all discarded), so the context of a queued chunk is known when it
    is submitted. ``lock`` is held by a job while it submits, and by a generating job until
    its last chunk has finished.
    """

    def __init__(self, request_id: str, start_stream: Callable[[AsyncIterator], AsyncIterator],
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.request_id = request_id
        self.context: list[int] = []
        self.lock = asyncio.Lock()
        self.clock = clock
        self.last_used = clock()
        self.alive = True
        self._inputs: asyncio.Queue = asyncio.Queue()
        self._chunks: deque[Chunk] = deque()
        self._reader = asyncio.create_task(self._read(start_stream(self._input_stream())))

    @property
    def idle(self) -> bool:
        """No job holds it and no chunk is pending: it may be evicted."""
        return not self.lock.locked() and not self._chunks

    def submit(self, token_ids: Sequence[int], max_tokens: int, engine_input: object) -> Chunk:
        """Append ``token_ids`` (at least one) and generate up to ``max_tokens`` after them;
        ``engine_input`` is the engine's form of that chunk (``InputFactory``)."""
        if not self.alive:
            raise SessionLost("the session has ended")
        if not token_ids or max_tokens < 1:
            raise ValueError("a chunk needs new tokens and max_tokens >= 1")
        if any(c.max_tokens > 1 for c in self._chunks):
            raise RuntimeError("a chunk cannot be queued behind one that keeps generated tokens")
        now = self.clock()
        chunk = Chunk(len(token_ids), max_tokens, now)
        if not self._chunks:
            chunk.started_at = now
        self._chunks.append(chunk)
        self.context.extend(token_ids)
        self.last_used = now
        self._inputs.put_nowait(engine_input)
        return chunk

    def abort(self) -> None:
        """End the engine request now (frees its KV); pending chunks fail with SessionLost."""
        self.alive = False
        self._reader.cancel()

    async def _input_stream(self) -> AsyncIterator:
        while True:
            yield await self._inputs.get()

    async def _read(self, stream: AsyncIterator) -> None:
        error: BaseException = SessionLost("the session was aborted")
        try:
            async for out in stream:
                now = self.clock()
                if not self._chunks:
                    raise RuntimeError("engine output without a pending chunk")
                head = self._chunks[0]
                completion = out.outputs[0]
                head._add(out, completion.token_ids, now)
                if completion.finish_reason is not None:
                    self._chunks.popleft()
                    self.context.extend(head.generated[:-1])  # the engine discards the last one
                    self.last_used = now
                    head._finish(str(completion.finish_reason), now)
                    if self._chunks:
                        self._chunks[0].started_at = now
            error = SessionLost("the engine ended the session")
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # engine errors reach every pending chunk
            error = exc
        finally:
            self.alive = False
            while self._chunks:
                self._chunks.popleft()._fail(error)
            with contextlib.suppress(Exception):
                await stream.aclose()  # aborts the engine request if it still runs
