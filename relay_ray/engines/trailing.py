"""Reuse the engine step a stopped segment had already started (its *trailing step*).

The tier applies stop rules vLLM does not know (entropy, cue strings, ...): when one fires,
the engine core has usually started the request's next decode step already, since it takes
messages (the abort) only between steps. That step still runs, and a new job arriving on the
tier meanwhile waits for it (measured: docs/benchmarks.md, "the engine's trailing step").

Its token is not always waste. It continues exactly the tokens the engine request had, so when
the same relay request's next job on this tier continues that very prefix with the same greedy
sampling, the token (with its logprobs) is that job's first token. R-Stitch does this often: a
one-token large segment, a one-token small segment whose token is dropped, the large tier again.
:class:`TrailingSteps` keeps that output: it aborts the request in the engine core only (so the
output of the step in flight still reaches the stream), reads one more output in the
background while the segment's result goes back at once, and hands it to the next job with the
same prefix and settings. Anything else gets nothing and runs as before.

Bounded: one kept output per relay request, ``max_entries`` in all (oldest dropped), each read
waiting at most a few engine steps (:meth:`wait_s`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass


@dataclass
class _Kept:
    prefix: tuple[int, ...]  # the token ids the kept output continues
    settings: Hashable  # sampling and logprobs it was computed with
    output: asyncio.Future  # the engine's next output, or None if none came in time


class TrailingSteps:
    """Per tier engine: the trailing-step outputs of stopped segments, by relay request id."""

    def __init__(self, max_entries: int = 1024, alpha: float = 0.2) -> None:
        self.max_entries = max_entries
        self.alpha = alpha
        self.step_s: float | None = None  # EMA of the engine's time between two outputs of a request
        self.num_kept = self.num_used = 0
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()

    def observe_step(self, seconds: float) -> None:
        """Two consecutive outputs of one engine request came ``seconds`` apart."""
        self.step_s = seconds if self.step_s is None else self.step_s + self.alpha * (seconds - self.step_s)

    def wait_s(self) -> float:
        """How long a trailing output may still take: two engine steps and a margin."""
        return 0.2 if self.step_s is None else 2.0 * self.step_s + 0.02

    def keep(self, request_id: str, prefix: tuple[int, ...], settings: Hashable, stream: AsyncIterator,
             abort_in_core: Callable[[], Awaitable[None]]) -> None:
        """Take over ``stream`` (an engine request whose segment just stopped, not yet aborted):
        abort it in the engine core, keep its next output for ``request_id``, close it."""
        self._kept.pop(request_id, None)
        while len(self._kept) >= self.max_entries:
            self._kept.popitem(last=False)
        future = asyncio.get_running_loop().create_future()
        self._kept[request_id] = _Kept(prefix, settings, future)
        self.num_kept += 1
        task = asyncio.create_task(self._read_one(stream, abort_in_core, future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def take(self, request_id: str, prefix: tuple[int, ...], settings: Hashable):
        """The kept output that continues exactly ``prefix`` with ``settings``, or None. Waits
        for it if its step is still running. Whatever was kept for the request is dropped."""
        kept = self._kept.pop(request_id, None)
        if kept is None or kept.prefix != prefix or kept.settings != settings:
            return None
        try:
            output = await asyncio.wait_for(asyncio.shield(kept.output), self.wait_s())
        except TimeoutError:
            return None
        if output is not None:
            self.num_used += 1
        return output

    async def _read_one(self, stream: AsyncIterator, abort_in_core: Callable[[], Awaitable[None]],
                        future: asyncio.Future) -> None:
        output = None
        try:
            await abort_in_core()
            output = await asyncio.wait_for(anext(stream), 2.0 * self.wait_s())
            if output.finished or not output.outputs or len(output.outputs[0].token_ids) != 1:
                output = None  # the engine ended it itself, or more than one step: not the next token alone
        except Exception:  # no output in time, a dead engine, a closed stream: nothing to reuse
            output = None
        finally:
            if not future.done():
                future.set_result(output)
            await stream.aclose()  # the frontend's side of the abort
