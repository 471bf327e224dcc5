"""A tier replica's sessions: bounded in count and tokens, least recently used evicted first,
idle ones reaped, ended requests remembered so that a late feed opens nothing."""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay_ray.engines.session.chunks import extends
from relay_ray.engines.session.engine_session import EngineSession


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
