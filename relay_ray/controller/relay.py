"""The relay controller: validates a request, prepares its prompt and runs its relay loop.

``RelayController`` keeps no state between requests (only the tiers' descriptions, fetched
once, and running estimates of the tiers' speeds), so any controller replica can serve any
request. Each request's loop lives in :class:`~relay_ray.controller.request_loop.RequestLoop`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace

from relay_ray.controller.attempts import Deadline, call_with_retries
from relay_ray.controller.events import RelayEvent, RelayResult
from relay_ray.controller.observer import RelayObserver
from relay_ray.controller.prefill_ahead import WarmTiming
from relay_ray.controller.limits import check_prompt_size
from relay_ray.controller.request_loop import RequestLoop, make_job
from relay_ray.controller.resume import ResumeCodec, ResumeInput, request_digest
from relay_ray.controller.tier_client import TierClient
from relay_ray.controller.validate import ControllerLimits, check_prompt_fits, validate_request
from relay_ray.errors import RelayInputError
from relay_ray.state import RelayState
from relay_ray.types import HandoffMode, KvSession, RelayRequest, SegmentJob, StopRule, Tier, TierInfo

__all__ = ["RelayController", "make_job"]
log = logging.getLogger(__name__)


class RelayController:
    """Runs relay requests over two :class:`TierClient` s."""

    def __init__(
        self,
        tiers: Mapping[Tier, TierClient],
        limits: ControllerLimits | None = None,
        clock: Callable[[], float] = time.perf_counter,
        observer: RelayObserver | None = None,
        resume_codec: ResumeCodec | None = None,
    ) -> None:
        self.tiers = dict(tiers)
        self.resume_codec = resume_codec
        self.limits = limits or ControllerLimits()
        self.observer = observer or RelayObserver()
        self.clock = clock
        self._infos: dict[Tier, TierInfo] | None = None
        self._background: set[asyncio.Task] = set()  # prefill-ahead jobs of every request in flight
        # shared by the requests of this replica
        self.warm_timing = WarmTiming(hide_probability=self.limits.prefill_ahead_hide_probability)

    async def tier_infos(self, deadline: Deadline | None = None) -> dict[Tier, TierInfo]:
        if self._infos is None:
            deadline = deadline or Deadline(self.clock, None)
            self._infos = {tier: await call_with_retries(client.describe, self.limits.retry_policy(tier), deadline)
                           for tier, client in self.tiers.items()}
        return self._infos

    async def handoff_mode(self) -> HandoffMode:
        infos = await self.tier_infos()
        same = infos[Tier.LARGE].tokenizer_fingerprint == infos[Tier.SMALL].tokenizer_fingerprint
        return HandoffMode.TOKEN_IDS if same else HandoffMode.TEXT

    async def generate(self, request: RelayRequest, stream_text: bool = False, timeout_s: float | None = None,
                       resume: ResumeInput | None = None) -> AsyncIterator[RelayEvent]:
        """Run one request; yields segment events (and text deltas if asked), then the result.

        With ``resume``, the request continues where the resume token says (see
        :mod:`~relay_ray.controller.resume`); nothing the client already holds is sent again.

        Raises :class:`~relay_ray.errors.RelayInputError` before any generation for bad input,
        :class:`~relay_ray.errors.RelayDeadlineError` when ``timeout_s`` passes, and
        :class:`~relay_ray.errors.TierUnavailableError` when a tier failed more often than
        its migration limit allows.
        """
        started = self.clock()
        deadline = Deadline(self.clock, timeout_s)
        loop = await self._start(request, stream_text, deadline, started, resume)
        with self.observer.request(loop.state.request_id, request.policy) as observed:
            async for event in loop.events():
                yield event
            result = loop.result()
            observed.finished(result)
        yield result

    async def run(self, request: RelayRequest, timeout_s: float | None = None) -> RelayResult:
        """Run one request to its end and return the result (no streaming)."""
        async for event in self.generate(request, timeout_s=timeout_s):
            if isinstance(event, RelayResult):
                return event
        raise AssertionError("unreachable: generate always ends with a RelayResult")

    async def _start(self, request: RelayRequest, stream_text: bool, deadline: Deadline, started: float,
                     resume: ResumeInput | None = None) -> RequestLoop:
        """Validate, render and tokenize the prompt, and set up the request's loop."""
        policy = validate_request(request, self.limits)
        infos = await self.tier_infos(deadline)
        check_prompt_size(request, min(info.max_model_len for info in infos.values()), self.limits.input)
        large = self.tiers[Tier.LARGE]
        prepared = await call_with_retries(lambda: large.prepare(request.prompt),
                                           self.limits.retry_policy(Tier.LARGE), deadline)
        check_prompt_fits(prepared, request.max_new_tokens, infos)
        state = RelayState(
            request_id=request.request_id or uuid.uuid4().hex,
            prompt_token_ids=prepared.token_ids,
            prompt_text=prepared.text,
            max_new_tokens=request.max_new_tokens,
            tier=policy.initial_tier(),
            handoff=await self.handoff_mode(),
        )
        digest = request_digest(replace(request, request_id=state.request_id), prepared.token_ids)
        loop = RequestLoop(self, request, policy, state, infos, stream_text, deadline, started, digest)
        if resume is not None:
            self._resume(loop, resume, infos)
        return loop

    def _resume(self, loop: RequestLoop, resume: ResumeInput, infos: Mapping[Tier, TierInfo]) -> None:
        if self.resume_codec is None:
            raise RelayInputError("resume", "this server does not resume requests (no resume secret)")
        if not loop.request.request_id:
            raise RelayInputError("request_id", "a resumed request must carry the request_id of the original")
        if resume.token:
            state, elapsed_ms, migrations = self.resume_codec.restore(loop.state, resume, loop.request_digest)
        else:  # broken before the first segment ended: the fresh state, plus the partial segment
            state, elapsed_ms, migrations = loop.state, 0.0, 0
        for name, ids, tier in (("resume.output_token_ids", resume.output_token_ids, Tier.LARGE),
                                ("resume.partial_token_ids", resume.partial_token_ids, state.tier)):
            vocab = infos[tier].vocab_size
            if any(not 0 <= t < vocab for t in ids):
                raise RelayInputError(name, f"token ids must be in [0, {vocab})")
        if len(resume.partial_token_ids) > state.remaining_tokens:
            raise RelayInputError("resume.partial_token_ids", "more tokens than the request has left")
        loop.resume_from(state, elapsed_ms, migrations, resume.partial_token_ids, resume.partial_text)

    async def end_session(self, tier: Tier, request_id: str) -> None:
        """Tell ``tier`` that ``request_id`` is over (it releases the request's KV session)."""
        job = SegmentJob(request_id, 0, StopRule(max_new_tokens=1), kv_session=KvSession.END)
        try:
            async for _ in self.tiers[tier].stream_segment(job):
                pass
        except Exception as exc:  # a lost end only keeps a session until the tier's idle TTL
            log.debug("ending the KV session of %s on %s failed: %s", request_id, tier.value, exc)

    async def prefill(self, tier: Tier, job: SegmentJob) -> None:
        """Run a prefill-only job (prefill-ahead) and learn how long a warm-up takes."""
        started = self.clock()
        try:
            async for _ in self.tiers[tier].stream_segment(job):
                pass
            self.warm_timing.observe_warm(tier, (self.clock() - started) * 1000.0)
        except Exception as exc:  # a lost warm-up only costs speed
            log.debug("prefill-ahead on %s failed: %s", tier.value, exc)
