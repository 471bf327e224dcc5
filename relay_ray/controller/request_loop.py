"""One request's relay loop: plan a segment, run it on a tier, fold the result, repeat.

:class:`RequestLoop` is created by :meth:`RelayController.generate` for each request and
holds only that request's mutable parts (state, prefill-ahead bookkeeping, background
jobs, the deadline). Each step is a named method:

- :meth:`events`: the loop; stops at the policy's end, the budget or ``max_segments``;
- :meth:`_segment`: one segment: plan, job, prefill-ahead, run, record, advance, emit;
- :meth:`_warm`: prefill-ahead jobs to the idle tier (background, cancelled with the request);
  a tier keeping the request's KV session is fed the other tier's tokens as they come;
- :meth:`_end_sessions`: at the end, the tiers asked to keep the request's KV release it;
- :meth:`result`: the final :class:`RelayResult` (closing an open ``<think>`` if due).

Text deltas are final: tiers never stream what their stop rule may drop and policies that
take text back say so in the stop rule (``retract_string``), so the deltas of a segment are
always a prefix of its committed text; what was not streamed is sent at the segment's end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from relay_ray.controller.attempts import Deadline, run_segment
from relay_ray.controller.events import RelayEvent, RelayResult, SegmentFinished, TextDelta
from relay_ray.controller.observer import SegmentObservation
from relay_ray.controller.prefill_ahead import PrefillAheadPlanner, SegmentProgress, prefill_job
from relay_ray.errors import TierUnavailableError
from relay_ray.policies import Policy, SegmentPlan
from relay_ray.state import RelayState
from relay_ray.types import (
    THINK_CLOSE_TEXT, FinishReason, HandoffMode, KvSession, RelayRequest, RelayStats, SegmentDelta, SegmentJob,
    SegmentRecord, SegmentResult, Tier, TierInfo,
)

if TYPE_CHECKING:
    from relay_ray.controller.relay import RelayController

log = logging.getLogger(__name__)


def make_job(state: RelayState, plan: SegmentPlan, request: RelayRequest, stream_interval: int,
             stream_block: int = 0) -> SegmentJob:
    """The segment job that continues ``state`` under ``plan`` (a pure rewrite)."""
    common = dict(
        request_id=state.request_id,
        segment_index=state.num_segments,
        stop=plan.stop,
        sampling=request.sampling,
        signals=plan.signals,
        stream_interval_tokens=stream_interval,
        stream_block_tokens=stream_block,
    )
    if state.handoff is HandoffMode.TOKEN_IDS:
        return SegmentJob(prefix_token_ids=state.prompt_token_ids + state.output_token_ids, **common)
    return SegmentJob(prefix_text=state.prompt_text + state.output_text, **common)


class RequestLoop:
    """The relay loop of one request (see the module docstring)."""

    def __init__(self, controller: RelayController, request: RelayRequest, policy: Policy, state: RelayState,
                 infos: Mapping[Tier, TierInfo], stream_text: bool, deadline: Deadline, started: float,
                 request_digest: str = "") -> None:
        self.ctl = controller
        self.request_digest = request_digest
        self.request = request
        self.policy = policy
        self.state = state
        self.infos = infos
        self.stream_text = stream_text
        self.deadline = deadline
        self.started = started
        limits = controller.limits
        # Tiers asked to keep this request's whole KV between its jobs (only worth it if it switches).
        self.kv_tiers = limits.kv_session_tiers if policy.switches_tiers else frozenset()
        self._kept: set[Tier] = set()  # tiers that were asked: they release it at the end
        self._feed_source: tuple | None = None  # the running segment's latest tokens, for the next feed
        self._delta_mark: tuple[int, float] | None = None  # (tokens received, when) at the segment's last delta
        self._ended = False
        self.planner = self._planner() if policy.switches_tiers else None
        self.interval = limits.stream_interval_tokens if stream_text else 0
        self.max_segments = limits.max_segments or 2 * request.max_new_tokens + 16
        self.num_migrations = 0
        self._background: set[asyncio.Task] = set()
        self._last_done = controller.clock()
        self._partial: tuple[tuple[int, ...], str] = ((), "")  # a resumed segment's part the client holds

    def resume_from(self, state: RelayState, elapsed_ms: float, num_migrations: int,
                    partial_token_ids: tuple[int, ...], partial_text: str) -> None:
        """Continue a request another controller replica started (controller/resume.py)."""
        self.state = state
        self.started -= elapsed_ms / 1000.0
        self.num_migrations = num_migrations
        self._partial = (tuple(partial_token_ids), partial_text)
        if self.planner is not None:  # what the previous replica warmed is unknown: start afresh
            self.planner = self._planner()

    def _planner(self) -> PrefillAheadPlanner | None:
        block_sizes = {tier: info.block_size for tier, info in self.infos.items()}
        limits = self.ctl.limits
        if not limits.prefill_ahead or self.state.handoff is not HandoffMode.TOKEN_IDS or not any(
                block_sizes.values()):
            return None
        return PrefillAheadPlanner(block_sizes, limits.prefill_ahead_tiers, feed_tiers=self.kv_tiers,
                                   feed_interval_tokens=limits.feed_interval_tokens)

    async def events(self) -> AsyncIterator[RelayEvent]:
        """Segment events (and text deltas if streaming) until the request is done."""
        try:
            while not self.state.done:
                if self.state.num_segments >= self.max_segments:
                    self.state = self.state.finish(FinishReason.MAX_SEGMENTS)
                    break
                async for event in self._segment():
                    yield event
        except BaseException:  # failed, cancelled or abandoned: no warm-up outlives the request
            self._ended = True
            for task in list(self._background):
                task.cancel()
            raise
        finally:
            self._ended = True
            self._end_sessions()

    async def _segment(self) -> AsyncIterator[RelayEvent]:
        ctl, policy = self.ctl, self.policy
        plan = policy.plan(self.state)
        job = make_job(self.state, plan, self.request, self.interval,
                       self.planner.stream_block(plan.tier.other) if self.planner else 0)
        partial_ids, streamed = self._partial  # only the first segment of a resumed request has some
        self._partial = ((), "")
        if partial_ids:
            job = replace(job, resume_token_ids=partial_ids)
        if plan.tier in self.kv_tiers:
            job = replace(job, kv_session=KvSession.KEEP)
            self._kept.add(plan.tier)
        with ctl.observer.segment(job, plan.tier, self.request.policy) as observed:
            if self.planner is not None and (job.segment_index == 0 or job.stream_block_tokens):
                # The prompt (first segment) is worth warming on either tier: the idle one
                # prefills it on its own core while the other tier prefills too.
                self._warm(plan.tier.other, job, job.prefix_token_ids, self._progress(job, plan.tier, 0))
            called = ctl.clock()
            self._delta_mark = None
            result = None
            received_ids = job.prefix_token_ids
            async for item in run_segment(ctl.tiers[plan.tier], job, ctl.limits.retry_policy(plan.tier),
                                          self.deadline, self._on_failure(plan.tier, observed)):
                if isinstance(item, SegmentResult):
                    result = item  # always the last item
                    continue
                received_ids = self._on_delta(item, job, plan.tier, received_ids)
                if self.stream_text and item.token_ids:
                    streamed += item.text
                    yield TextDelta(job.segment_index, plan.tier, item.text, item.token_ids)
            received = ctl.clock()
            self._feed_source = None
            self._account(plan.tier, job, result, (received - called) * 1000.0)
            record = _record(job, plan.tier, result, (received - called) * 1000.0,
                             (called - self._last_done) * 1000.0)
            self.state = policy.advance(self.state, plan, result, record)
            observed.finished(self.state.segments[-1])
        record = self.state.segments[-1]
        if self.stream_text:
            # The tail carries no token ids: its last token may be the one that ended the
            # segment, which a resumed segment must generate again to see its stop rule fire.
            tail = _unsent_tail(record.text, streamed, job.segment_index)
            if tail:
                yield TextDelta(job.segment_index, plan.tier, tail)
        yield SegmentFinished(record, self._resume_token(), result.token_ids[:record.num_tokens])
        self._last_done = ctl.clock()

    def _resume_token(self) -> bytes:
        codec = self.ctl.resume_codec
        if codec is None or not self.stream_text:
            return b""
        elapsed_ms = (self.ctl.clock() - self.started) * 1000.0
        return codec.encode(self.state, self.request_digest, elapsed_ms, self.num_migrations)

    def _on_failure(self, tier: Tier, observed: SegmentObservation) -> Callable[[TierUnavailableError, int], None]:
        def note(error: TierUnavailableError, failure: int) -> None:
            self.num_migrations += 1
            log.warning("request %s: %s segment failed (%s, attempt %d): %s; re-running it",
                        self.state.request_id, tier.value, error.cause.value, failure, error)
            observed.migrated(error.cause, failure)
        return note

    def _on_delta(self, delta: SegmentDelta, job: SegmentJob, tier: Tier,
                  received_ids: tuple[int, ...]) -> tuple[int, ...]:
        """Warm the idle tier with the blocks the running segment has completed."""
        if self.planner is None or not delta.token_ids:
            return received_ids
        received_ids += delta.token_ids
        now, mark = self.ctl.clock(), self._delta_mark
        if mark is not None:  # the tier's pace between two deltas: decode only, no prefill
            self.ctl.warm_timing.observe_decode(tier, len(received_ids) - mark[0], (now - mark[1]) * 1000.0)
        self._delta_mark = (len(received_ids), now)
        progress = self._progress(job, tier, len(received_ids) - len(job.prefix_token_ids))
        self._feed_source = (job, received_ids, progress)
        self._warm(tier.other, job, received_ids, progress)
        return received_ids

    def _progress(self, job: SegmentJob, tier: Tier, num_generated: int) -> SegmentProgress:
        return SegmentProgress(self.request.policy, tier, num_generated, job.stop.max_new_tokens - num_generated,
                               job.stop.can_stop_early)

    def _account(self, tier: Tier, job: SegmentJob, result: SegmentResult, elapsed_ms: float) -> None:
        if self.planner is None:
            return
        # KV exists for the prefix and every kept token but the last one.
        self.planner.ran(tier, len(job.prefix_token_ids) + max(0, len(result.token_ids) - 1))
        if tier not in self.ctl.warm_timing.decode_ms_per_token:  # until deltas give a pace without prefill
            self.ctl.warm_timing.observe_decode(tier, len(result.token_ids), elapsed_ms)
        self.ctl.warm_timing.observe_segment(self.request.policy, tier,
                                             len(result.token_ids) + result.num_dropped_tokens)

    def _warm(self, tier: Tier, job: SegmentJob, prefix_token_ids: tuple[int, ...],
              progress: SegmentProgress) -> None:
        """Send ``tier`` (idle for this request) the whole blocks of the prefix it lacks, if
        the generating segment (``progress``) is likely to hide the warm-up; a fed tier (KV
        session) gets every token it lacks, one feed at a time."""
        fed = self.planner.is_fed(tier)
        gated = not fed or self.ctl.limits.feed_when_hidden
        if self._ended or (gated and not self.ctl.warm_timing.hidden(tier, progress)):
            return
        length = self.planner.warm_length(tier, len(prefix_token_ids))
        if length:
            kv_session = KvSession.KEEP if tier in self.kv_tiers else KvSession.NONE
            if kv_session is KvSession.KEEP:
                self._kept.add(tier)
            warm = prefill_job(job.request_id, job.segment_index, prefix_token_ids[:length], kv_session)
            task = asyncio.create_task(self.ctl.prefill(tier, warm))
            for tasks in (self._background, self.ctl._background):
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if fed:
                task.add_done_callback(lambda _task: self._fed(tier))

    def _fed(self, tier: Tier) -> None:
        """A feed to ``tier`` ended: send what the running segment wrote meanwhile."""
        self.planner.fed(tier)
        source = self._feed_source
        if source is not None and source[2].tier is tier.other:
            self._warm(tier, *source)

    def _end_sessions(self) -> None:
        """The request is over: the tiers asked to keep its KV release it (background)."""
        for tier in self._kept:
            task = asyncio.create_task(self.ctl.end_session(tier, self.state.request_id))
            self.ctl._background.add(task)
            task.add_done_callback(self.ctl._background.discard)
        self._kept.clear()

    def result(self) -> RelayResult:
        """The request's result (appends ``\\n</think>`` when the policy closes an open think
        block at the budget)."""
        state = self.state
        if (state.finish_reason is FinishReason.BUDGET and self.policy.closes_think_on_budget
                and state.think_open):
            state = state.append_forced(self.infos[Tier.LARGE].think_close_token_ids, THINK_CLOSE_TEXT)
        self.state = state
        stats = RelayStats(
            tokens_by_tier=state.tokens_by_tier(),
            generated_by_tier=state.tokens_by_tier(include_dropped=True),
            num_switches=state.num_switches,
            num_segments=state.num_segments,
            latency_ms=(self.ctl.clock() - self.started) * 1000.0,
            finish_reason=state.finish_reason,
            handoff_mode=state.handoff,
            num_migrations=self.num_migrations,
        )
        return RelayResult(state.request_id, state.output_text, state.output_token_ids, state.segments, stats)


def _unsent_tail(committed: str, streamed: str, segment_index: int) -> str:
    """The committed text of a segment not streamed yet (deltas are a prefix of it)."""
    if committed.startswith(streamed):
        return committed[len(streamed):]
    # Tiers hold back what may be dropped; reaching this is a bug, not a client error.
    log.error("segment %d: streamed text is not a prefix of the committed text", segment_index)
    return ""


def _record(job: SegmentJob, tier: Tier, result: SegmentResult, elapsed_ms: float,
            controller_ms: float) -> SegmentRecord:
    transport_ms = max(0.0, elapsed_ms - result.timing.total_ms)
    return SegmentRecord(
        index=job.segment_index,
        tier=tier,
        text=result.text,
        num_tokens=len(result.token_ids),
        finish_reason=result.finish_reason,
        matched_stop=result.matched_stop,
        num_dropped_tokens=result.num_dropped_tokens,
        num_prompt_tokens=result.num_prompt_tokens,
        num_cached_tokens=result.num_cached_tokens,
        timing=result.timing,
        replica_id=result.replica_id,
        handoff_ms=controller_ms + transport_ms,
        controller_ms=controller_ms,
        transport_ms=transport_ms,
    )
