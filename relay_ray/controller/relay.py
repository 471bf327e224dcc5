"""The relay loop: plan a segment, run it on a tier, fold the result, repeat.

``RelayController`` keeps no state between requests (only the tiers' descriptions, fetched
once), so any controller replica can serve any request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping

from relay_ray.controller.events import RelayEvent, RelayResult, SegmentFinished, TextDelta
from relay_ray.controller.observer import RelayObserver
from relay_ray.controller.prefill_ahead import PrefillAheadPlanner, WarmTiming, prefill_job
from relay_ray.controller.tier_client import TierClient
from relay_ray.controller.validate import ControllerLimits, check_prompt_fits, validate_request
from relay_ray.errors import TierUnavailableError
from relay_ray.policies import Policy, SegmentPlan
from relay_ray.state import RelayState
from relay_ray.types import (
    FinishReason,
    HandoffMode,
    RelayRequest,
    RelayStats,
    SegmentDelta,
    SegmentJob,
    SegmentRecord,
    SegmentResult,
    Tier,
    TierInfo,
)

THINK_CLOSE_TEXT = "\n</think>"
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


class RelayController:
    """Runs relay requests over two :class:`TierClient` s."""

    def __init__(
        self,
        tiers: Mapping[Tier, TierClient],
        limits: ControllerLimits | None = None,
        clock: Callable[[], float] = time.perf_counter,
        observer: RelayObserver | None = None,
    ) -> None:
        self.tiers = dict(tiers)
        self.limits = limits or ControllerLimits()
        self.observer = observer or RelayObserver()
        self._clock = clock
        self._infos: dict[Tier, TierInfo] | None = None
        self._background: set[asyncio.Task] = set()  # prefill-ahead jobs in flight
        self.warm_timing = WarmTiming()

    async def tier_infos(self) -> dict[Tier, TierInfo]:
        if self._infos is None:
            self._infos = {tier: await client.describe() for tier, client in self.tiers.items()}
        return self._infos

    async def handoff_mode(self) -> HandoffMode:
        infos = await self.tier_infos()
        same = infos[Tier.LARGE].tokenizer_fingerprint == infos[Tier.SMALL].tokenizer_fingerprint
        return HandoffMode.TOKEN_IDS if same else HandoffMode.TEXT

    async def generate(self, request: RelayRequest, stream_text: bool = False) -> AsyncIterator[RelayEvent]:
        """Run one request; yields segment events (and text deltas if asked), then the result.

        Raises :class:`~relay_ray.errors.RelayInputError` before any generation for bad input.
        """
        started = self._clock()
        policy = validate_request(request, self.limits)
        infos = await self.tier_infos()
        prepared = await self.tiers[Tier.LARGE].prepare(request.prompt)
        check_prompt_fits(prepared, request.max_new_tokens, infos)
        state = RelayState(
            request_id=request.request_id or uuid.uuid4().hex,
            prompt_token_ids=prepared.token_ids,
            prompt_text=prepared.text,
            max_new_tokens=request.max_new_tokens,
            tier=policy.initial_tier(),
            handoff=await self.handoff_mode(),
        )
        planner = self._planner(infos, state) if policy.switches_tiers else None
        interval = self.limits.stream_interval_tokens if stream_text else 0
        max_segments = self.limits.max_segments or 2 * request.max_new_tokens + 16
        last_done = self._clock()
        with self.observer.request(state.request_id, request.policy) as observed_request:
            while not state.done:
                if state.num_segments >= max_segments:
                    state = state.finish(FinishReason.MAX_SEGMENTS)
                    break
                plan = policy.plan(state)
                job = make_job(state, plan, request, interval,
                               planner.stream_block(plan.tier.other) if planner else 0)
                with self.observer.segment(job, plan.tier, request.policy) as observed_segment:
                    result, streamed, streamed_ids = None, "", job.prefix_token_ids
                    if planner is not None and (job.segment_index == 0 or job.stream_block_tokens):
                        # The prompt (first segment) is worth warming on either tier: the idle
                        # one prefills it on its own core while the other tier prefills too.
                        self._prefill_ahead(planner, plan.tier.other, job, streamed_ids, plan.tier,
                                            job.stop.max_new_tokens)
                    called = self._clock()
                    async for item in self._run(plan.tier, job):
                        if isinstance(item, SegmentResult):
                            result = item
                            continue
                        if planner is not None and item.token_ids:
                            streamed_ids += item.token_ids
                            remaining = job.stop.max_new_tokens - (len(streamed_ids) - len(job.prefix_token_ids))
                            self._prefill_ahead(planner, plan.tier.other, job, streamed_ids, plan.tier, remaining)
                        if stream_text and item.text:
                            streamed += item.text
                            yield TextDelta(job.segment_index, plan.tier, item.text)
                    received = self._clock()
                    if planner is not None:
                        # KV exists for the prefix and every kept token but the last one.
                        planner.ran(plan.tier, len(job.prefix_token_ids) + max(0, len(result.token_ids) - 1))
                        self.warm_timing.observe_decode(plan.tier, len(result.token_ids), (received - called) * 1000.0)
                    record = self._record(job, plan.tier, result, (received - called) * 1000.0,
                                          (called - last_done) * 1000.0)
                    state = policy.advance(state, plan, result, record)
                    observed_segment.finished(state.segments[-1])
                committed = state.segments[-1].text
                if stream_text and len(committed) > len(streamed) and committed.startswith(streamed):
                    yield TextDelta(job.segment_index, plan.tier, committed[len(streamed):])
                yield SegmentFinished(state.segments[-1])
                last_done = self._clock()
            state = self._close_think(policy, state, infos)
            result = self._result(state, started)
            observed_request.finished(result)
        yield result

    def _planner(self, infos: Mapping[Tier, TierInfo], state: RelayState) -> PrefillAheadPlanner | None:
        block_sizes = {tier: info.block_size for tier, info in infos.items()}
        if not self.limits.prefill_ahead or state.handoff is not HandoffMode.TOKEN_IDS or not any(
                block_sizes.values()):
            return None
        return PrefillAheadPlanner(block_sizes, self.limits.prefill_ahead_tiers)

    def _prefill_ahead(self, planner: PrefillAheadPlanner | None, tier: Tier, job: SegmentJob,
                       prefix_token_ids: tuple[int, ...], generating: Tier, remaining_tokens: int) -> None:
        """Send ``tier`` (idle for this request) the whole blocks of the prefix it lacks, if
        the ``remaining_tokens`` of the ``generating`` tier's segment can hide the warm-up."""
        if planner is None or not self.warm_timing.hidden(tier, generating, remaining_tokens):
            return
        length = planner.warm_length(tier, len(prefix_token_ids))
        if length:
            warm = prefill_job(job.request_id, job.segment_index, prefix_token_ids[:length])
            task = asyncio.create_task(self._drain(tier, warm))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _drain(self, tier: Tier, job: SegmentJob) -> None:
        started = self._clock()
        try:
            async for _ in self.tiers[tier].stream_segment(job):
                pass
            self.warm_timing.observe_warm(tier, (self._clock() - started) * 1000.0)
        except Exception as exc:  # a lost warm-up only costs speed
            log.debug("prefill-ahead on %s failed: %s", tier.value, exc)

    async def _run(self, tier: Tier, job: SegmentJob) -> AsyncIterator[SegmentDelta | SegmentResult]:
        got_result = False
        try:
            async for item in self.tiers[tier].stream_segment(job):
                got_result = got_result or isinstance(item, SegmentResult)
                yield item
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise TierUnavailableError(f"{tier.value} tier failed: {exc}") from exc
        if not got_result:
            raise TierUnavailableError(f"{tier.value} tier ended segment {job.segment_index} without a result")

    @staticmethod
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

    @staticmethod
    def _close_think(policy: Policy, state: RelayState, infos: Mapping[Tier, TierInfo]) -> RelayState:
        if not (state.finish_reason is FinishReason.BUDGET and policy.closes_think_on_budget and state.think_open):
            return state
        return state.append_forced(infos[Tier.LARGE].think_close_token_ids, THINK_CLOSE_TEXT)

    def _result(self, state: RelayState, started: float) -> RelayResult:
        stats = RelayStats(
            tokens_by_tier=state.tokens_by_tier(),
            generated_by_tier=state.tokens_by_tier(include_dropped=True),
            num_switches=state.num_switches,
            num_segments=state.num_segments,
            latency_ms=(self._clock() - started) * 1000.0,
            finish_reason=state.finish_reason,
            handoff_mode=state.handoff,
        )
        return RelayResult(state.request_id, state.output_text, state.output_token_ids, state.segments, stats)
