"""KV sessions: one relay request's whole KV cache kept hot on a tier between its jobs.

A plain segment job is a new engine request: vLLM's prefix cache gives back the whole KV
blocks of its prefix, and the partial last block plus everything the other tier wrote since
(the *delta*) is computed again. A *session* is instead one resumable engine request per
relay request on a tier replica (vLLM's streaming input: ``AsyncLLM.generate`` with an async
generator of ``StreamingInput``): every job appends its new tokens as one more input chunk to
the KV the session already holds, partial block included. Jobs that only feed tokens (the
controller's prefill-ahead, ``prefill_only``) append the other tier's tokens *while it is
still writing*, so that at the switch only the last few tokens and one decode step are left.

Engine semantics this module relies on (vLLM 0.32, ``v1/core/sched/scheduler.py``
``_handle_stopped_request`` and ``_update_request_as_session``; pinned by
``tests/unit/test_session.py``'s fake engine and by the exactness integration test):

- a chunk generates until its ``max_tokens`` (or EOS); then its *last sampled token is
  discarded* and the other generated tokens stay in the context; the next chunk's tokens are
  appended after them. So a job feeds back the last token it keeps as its next chunk's first;
- chunks added while one runs wait and run in order;
- a chunk cannot be stopped early: a stop rule that fires inside a chunk leaves tokens in the
  context that the relay does not keep. Chunks are therefore sized so that the rule cannot
  fire inside them (:func:`next_chunk`): a fixed-length segment is one chunk, the tokens
  before ``min_new_tokens`` are one chunk, then ``step_tokens`` chunks of one token each; the
  rest of a long segment runs as one chunk, and if the rule fires inside it the session is
  aborted (the next job reopens one from the prefix cache).

Correctness never depends on the bookkeeping being right: each job's full prefix is
compared with the session's context, and any mismatch (a dropped token, a resumed segment,
a lost session) reopens the session from the prefix cache, exactly like a plain job.

Sessions hold a model-runner slot and KV blocks that vLLM cannot preempt, so the pool
bounds them (count and tokens), evicts idle ones least recently used first, reaps those
idle for ``ttl_s`` (a controller that died never sends ``KvSession.END``), and returns
``None`` when it has no room: the job then runs plainly.

Engine-free: the engine is reached through the ``start_stream``/``make_input`` callables
that :class:`~relay_ray.engines.vllm_tier.VllmTierEngine` provides (outputs shaped like
vLLM's ``RequestOutput``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from relay_ray.engines.segment_run import SegmentRun
from relay_ray.types import SegmentDelta, StopRule

log = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Bounds of one replica's sessions."""

    max_sessions: int  # sessions at once (each holds a model-runner slot)
    max_tokens: int  # their context tokens together (KV they hold; vLLM cannot preempt it)
    ttl_s: float  # an idle session is closed after this long (its controller may be gone)
    step_tokens: int  # one-token chunks of a segment whose rule can stop it (next_chunk)


# Ended request ids a pool remembers (at most; each for the idle TTL).
MAX_ENDED_IDS = 4096


class SessionPool:
    """The sessions of one tier replica, by relay request id (least recently used first)."""

    def __init__(self, factory: Callable[[str], EngineSession], limits: SessionLimits,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._factory = factory
        self.limits = limits
        self._clock = clock
        self._sessions: OrderedDict[str, EngineSession] = OrderedDict()
        # Requests that ended here, and when: a prefill-ahead feed still on its way when the
        # controller's END arrived must not reopen a session nobody would end (until the TTL).
        self._ended: OrderedDict[str, float] = OrderedDict()
        self.num_opened = 0
        self.num_reused = 0
        self.num_refused = 0  # jobs that ran plainly for want of room

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, request_id: str) -> EngineSession | None:
        return self._sessions.get(request_id)

    def end(self, request_id: str) -> None:
        """The request is over: close its session (if a job still uses it, that job's next
        chunk fails and the job finishes plainly)."""
        self._close(request_id)
        self._ended[request_id] = self._clock()
        self._ended.move_to_end(request_id)
        while len(self._ended) > MAX_ENDED_IDS:
            self._ended.popitem(last=False)

    def has_ended(self, request_id: str) -> bool:
        """``request_id`` ended here within the idle TTL."""
        ended_at = self._ended.get(request_id)
        return ended_at is not None and self._clock() - ended_at <= self.limits.ttl_s

    def _close(self, request_id: str) -> None:
        session = self._sessions.pop(request_id, None)
        if session is not None:
            session.abort()

    def close_all(self) -> None:
        for request_id in list(self._sessions):
            self._close(request_id)

    @contextlib.asynccontextmanager
    async def checkout(self, request_id: str, prefix: Sequence[int], need_new: bool = True):
        """The request's session and the tokens of ``prefix`` it lacks, with its lock held;
        ``None`` when no session can be had (run the job plainly).

        A session whose context is not a prefix of ``prefix`` (or equals it while
        ``need_new``: a generating job needs at least one new token) is replaced by a new one
        whose first chunk is the whole prefix (vLLM's prefix cache serves its whole blocks)."""
        self._reap()
        session = self._sessions.get(request_id)
        if session is not None:
            await session.lock.acquire()
            ctx = session.context
            if need_new:
                fits = len(prefix) > len(ctx) and extends(ctx, prefix)
            else:  # a feed the session is already past (it raced a later job) adds nothing
                fits = extends(ctx, prefix) or extends(prefix, ctx)
            if session.alive and fits:
                self._sessions.move_to_end(request_id)
                self.num_reused += 1
                try:
                    yield session, list(prefix[len(ctx):])
                finally:
                    session.lock.release()
                return
            session.lock.release()
            if self._sessions.get(request_id) is session:
                self._close(request_id)
        session = self._open(request_id, len(prefix))
        if session is None:
            yield None
            return
        async with session.lock:
            yield session, list(prefix)

    def _open(self, request_id: str, num_tokens: int) -> EngineSession | None:
        limits = self.limits
        if self.has_ended(request_id):  # a late job of a finished request: run it plainly
            return None
        while self._sessions and (len(self._sessions) >= limits.max_sessions
                                  or self._tokens() + num_tokens > limits.max_tokens):
            victim = next((rid for rid, s in self._sessions.items() if s.idle), None)
            if victim is None:
                break
            self._close(victim)
        if len(self._sessions) >= limits.max_sessions or self._tokens() + num_tokens > limits.max_tokens:
            self.num_refused += 1
            return None
        session = self._factory(request_id)
        self._sessions[request_id] = session
        self.num_opened += 1
        return session

    def _tokens(self) -> int:
        return sum(len(s.context) for s in self._sessions.values())

    def _reap(self) -> None:
        now = self._clock()
        for request_id, session in list(self._sessions.items()):
            if not session.alive or (session.idle and now - session.last_used > self.limits.ttl_s):
                self._close(request_id)
        while self._ended and now - next(iter(self._ended.values())) > self.limits.ttl_s:
            self._ended.popitem(last=False)


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
