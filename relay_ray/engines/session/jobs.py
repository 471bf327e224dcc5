"""A tier's jobs in a session: a generating segment (``generate``) and a prefill-ahead feed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from relay_ray.engines.segment_run import SegmentRun
from relay_ray.engines.session.chunks import FINISH_STOP, SessionLost, next_chunk
from relay_ray.engines.session.pool import SessionPool
from relay_ray.types import SegmentDelta

log = logging.getLogger(__name__)

# The engine's form of one input chunk: (new token ids, max tokens) -> engine input.
InputFactory = Callable[[list[int], int], object]
# Feed one engine output to a segment run; True when the segment has ended.
PushOutputs = Callable[[SegmentRun, object], bool]


@dataclass
class SessionOutcome:
    """What the session path did with a job (the tier reports it in the result)."""

    used: bool = False  # a session ran (part of) the job
    finished: bool = False  # the job is complete; else the tier finishes it plainly
    num_cached_tokens: int = 0  # prefix tokens whose KV the session already held
    queue_ms: float = 0.0  # waiting for the session (a feed chunk still running, a lock)
    prefill_ms: float = 0.0  # the first chunk's delta prefill, up to its first token
    first_token_at: float | None = None


async def generate(pool: SessionPool, run: SegmentRun, make_input: InputFactory, push: PushOutputs,
                   outcome: SessionOutcome, submitted_at: float) -> AsyncIterator[SegmentDelta]:
    """Run ``run``'s segment in the request's session, yielding its deltas.

    Leaves ``outcome.used`` False when the pool had no room (nothing ran: run it plainly),
    and ``outcome.finished`` False when the session was lost midway (the tokens pushed to
    ``run`` so far are real: continue plainly from them)."""
    prefix = run.engine_prefix_ids
    async with pool.checkout(run.job.request_id, prefix) as got:
        if got is None:
            return
        session, new = got
        outcome.used = True
        outcome.num_cached_tokens = len(prefix) - len(new)
        engine_tokens, stepped, chunk = 0, 0, None
        try:
            while True:
                size = next_chunk(run.job.stop, run.stopper.num_tokens, run.max_engine_tokens - engine_tokens,
                                  stepped, pool.limits.step_tokens)
                chunk = session.submit(new, size.max_tokens, make_input(new, size.max_tokens))
                ended = False
                async for out in chunk.outputs():
                    if outcome.first_token_at is None:
                        started = chunk.started_at or chunk.submitted_at
                        outcome.first_token_at = chunk.first_at
                        outcome.queue_ms = max(0.0, (started - submitted_at) * 1000.0)
                        outcome.prefill_ms = max(0.0, (chunk.first_at - started) * 1000.0)
                    if push(run, out):
                        ended = True
                        break
                    delta = run.take_delta()
                    if delta is not None:
                        yield delta
                engine_tokens += len(chunk.generated)
                if ended:
                    break
                if chunk.finish_reason == FINISH_STOP:
                    run.engine_finished(eos=True)
                    break
                if engine_tokens >= run.max_engine_tokens:
                    run.engine_finished(eos=False)
                    break
                stepped += size.max_tokens == 1
                new = chunk.generated[-1:]  # the engine discarded it: it leads the next chunk
        except SessionLost as exc:
            log.info("request %s: session lost (%s); finishing the segment plainly", run.job.request_id, exc)
            return
        except BaseException:  # cancelled, or a fault: the chunk's tokens would be unaccounted for
            if chunk is not None and not chunk.finished:
                session.abort()
            raise
        if not chunk.finished:  # the rule fired inside the chunk: its context is not ours
            session.abort()
        outcome.finished = True


async def feed(pool: SessionPool, request_id: str, prefix: Sequence[int], make_input: InputFactory) -> bool:
    """Append the tokens of ``prefix`` the request's session lacks (prefill-ahead) and wait
    until the engine has computed them; False when the pool had no room. A feed that arrives
    after its request ended does nothing (True)."""
    if pool.has_ended(request_id):
        return True
    chunk = None
    async with pool.checkout(request_id, prefix, need_new=False) as got:
        if got is None:
            return False
        session, new = got
        if new:
            chunk = session.submit(new, 1, make_input(new, 1))
    if chunk is not None:
        with contextlib.suppress(SessionLost):
            await chunk.wait()
    return True
