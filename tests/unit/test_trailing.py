"""engines/trailing.py: the trailing step's output goes to the next job with that exact prefix."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from relay_ray.engines.trailing import TrailingSteps


def _output(token_id: int, finished: bool = False):
    return SimpleNamespace(finished=finished, outputs=[SimpleNamespace(token_ids=[token_id])])


class Stream:
    """An engine stream that yields ``outputs`` after ``delay_s`` each (or never, if None)."""

    def __init__(self, outputs=(), delay_s: float | None = 0.0) -> None:
        self.outputs, self.delay_s = list(outputs), delay_s
        self.closed = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.delay_s is None:
            await asyncio.sleep(3600)
        await asyncio.sleep(self.delay_s)
        if not self.outputs:
            raise StopAsyncIteration
        return self.outputs.pop(0)

    async def aclose(self):
        self.closed = True


def _keep(steps: TrailingSteps, stream: Stream, prefix=(1, 2, 3), settings="greedy", request_id="r1"):
    aborted = []

    async def abort():
        aborted.append(request_id)
    steps.keep(request_id, prefix, settings, stream, abort)
    return aborted


def test_the_next_job_with_the_same_prefix_and_settings_gets_the_trailing_token():
    async def go():
        steps = TrailingSteps()
        stream = Stream([_output(7)], delay_s=0.01)
        aborted = _keep(steps, stream)
        out = await steps.take("r1", (1, 2, 3), "greedy")  # waits for the step in flight
        await asyncio.sleep(0)
        return out, aborted, stream, steps
    out, aborted, stream, steps = asyncio.run(go())
    assert out.outputs[0].token_ids == [7]
    assert aborted == ["r1"] and stream.closed  # aborted in the core first, closed after
    assert (steps.num_kept, steps.num_used) == (1, 1)


def test_anything_else_gets_nothing_and_the_kept_output_is_dropped():
    async def go():
        steps = TrailingSteps()
        results = []
        for prefix, settings in (((1, 2), "greedy"), ((1, 2, 3), "other"), ((1, 2, 3, 9), "greedy")):
            _keep(steps, Stream([_output(7)]))
            results.append(await steps.take("r1", prefix, settings))
            results.append(await steps.take("r1", (1, 2, 3), "greedy"))  # taken once: gone
        _keep(steps, Stream([_output(7)]))
        results.append(await steps.take("r2", (1, 2, 3), "greedy"))  # another request
        await asyncio.sleep(0.01)
        return results
    assert asyncio.run(go()) == [None] * 7


def test_no_output_in_time_or_an_engine_finished_output_gives_nothing():
    async def go():
        steps = TrailingSteps()
        steps.observe_step(0.01)  # two steps + 20 ms: 40 ms at most
        never = Stream(delay_s=None)
        _keep(steps, never)
        waited = await steps.take("r1", (1, 2, 3), "greedy")
        _keep(steps, Stream([_output(7, finished=True)]))
        finished = await steps.take("r1", (1, 2, 3), "greedy")
        _keep(steps, Stream([]))  # the stream ended without an output
        ended = await steps.take("r1", (1, 2, 3), "greedy")
        await asyncio.sleep(0.2)  # the reader gives up on the silent stream and closes it
        return waited, finished, ended, never.closed, steps.num_used
    assert asyncio.run(go()) == (None, None, None, True, 0)


def test_kept_outputs_are_bounded_oldest_first():
    async def go():
        steps = TrailingSteps(max_entries=2)
        for request_id in ("a", "b", "c"):
            _keep(steps, Stream([_output(7)]), request_id=request_id)
        got = [await steps.take(r, (1, 2, 3), "greedy") for r in ("a", "b", "c")]
        return [g is not None for g in got]
    assert asyncio.run(go()) == [False, True, True]


def test_the_wait_follows_the_engines_step():
    steps = TrailingSteps(alpha=0.5)
    assert steps.wait_s() == 0.2  # no step measured yet
    steps.observe_step(0.05)
    steps.observe_step(0.03)
    assert abs(steps.wait_s() - (2 * 0.04 + 0.02)) < 1e-9
