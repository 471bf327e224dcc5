"""A tier's engine: one vLLM ``AsyncLLM`` that runs segment jobs.

The stop rule is evaluated here, on every token as it streams out of the engine, and the
engine request is aborted the moment the rule fires: no per-token round trip leaves the
replica. ``vllm`` is imported lazily so that importing this module stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

from relay_ray.config import TierConfig
from relay_ray.engines.detok import IncrementalDecoder
from relay_ray.engines.lifecycle import NICENESS_ENV, POLL_SLEEP_ENV, POLL_SPIN_ENV, bind_to_replica
from relay_ray.engines.prompts import guard_control_tokens, model_display_name, tokenizer_fingerprint
from relay_ray.engines import engine_io
from relay_ray.engines import session as kv
from relay_ray.engines.segment_run import SegmentRun
from relay_ray.errors import FailureCause, RelayInputError, TierUnavailableError
from relay_ray.types import (
    THINK_CLOSE_TEXT,
    Commit,
    FinishReason,
    KvSession,
    PreparedPrompt,
    PromptInput,
    SegmentDelta,
    SegmentJob,
    SegmentResult,
    SegmentTiming,
    Tier,
    TierInfo,
)


def apply_cpu_env(config: TierConfig) -> None:
    """vLLM's CPU backend reads these at engine start (set before the engine spawns)."""
    if config.kv_cache_space_gib is not None:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(config.kv_cache_space_gib)
    if config.cpu_threads_bind is not None:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = config.cpu_threads_bind
    os.environ[NICENESS_ENV] = str(config.engine_niceness)
    os.environ[POLL_SLEEP_ENV] = str(config.engine_poll_sleep_us)
    os.environ[POLL_SPIN_ENV] = str(config.engine_poll_spin_us)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@contextlib.asynccontextmanager
async def _engine_errors():
    """A dead engine is an infrastructure fault (the controller re-runs the segment on
    another replica; Serve restarts this one when its health check fails)."""
    from vllm.v1.engine.exceptions import EngineDeadError

    try:
        yield
    except EngineDeadError as exc:
        raise TierUnavailableError(f"engine dead: {exc}", FailureCause.ENGINE_DEAD) from None


class VllmTierEngine:
    """Owns one ``AsyncLLM``; call :meth:`start` once before use."""

    def __init__(self, tier: Tier, config: TierConfig, replica_id: str = "") -> None:
        self.tier = tier
        self.config = config
        self.replica_id = replica_id or f"{tier.value}-{os.getpid()}"
        self.engine = None
        self.tokenizer = None
        self._info: TierInfo | None = None
        self._controls: tuple[str, ...] | None = None
        self.sessions: kv.SessionPool | None = None  # KV sessions (engines/session/), if enabled
        self._sentinel: int | None = None  # engines/entropy_stop.py: None = entropy rules use logprobs

    async def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from relay_ray.engines.entropy_stop import PROCESSOR_FQCN, resolve_sentinel

        cfg = self.config
        apply_cpu_env(cfg)
        bind_to_replica()  # the engine core process must not outlive this one
        in_engine = cfg.entropy_in_engine and cfg.speculative is None
        args = AsyncEngineArgs(
            model=cfg.model,
            tokenizer=cfg.tokenizer,
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            block_size=cfg.block_size,
            enforce_eager=cfg.enforce_eager,
            tensor_parallel_size=cfg.tensor_parallel_size,
            enable_prefix_caching=True,  # every handoff relies on it
            max_num_seqs=cfg.max_num_seqs,
            max_logprobs=cfg.max_logprobs,
            seed=cfg.seed,
            **({"gpu_memory_utilization": cfg.gpu_memory_utilization} if cfg.gpu_memory_utilization else {}),
            **({"kv_cache_memory_bytes": cfg.kv_cache_memory_mib << 20} if cfg.kv_cache_memory_mib else {}),
            **({"speculative_config": cfg.speculative.engine_config()} if cfg.speculative else {}),
            **({"distributed_executor_backend": "ray"} if cfg.on_gpu and cfg.tensor_parallel_size > 1 else {}),
            **({"logits_processors": [PROCESSOR_FQCN]} if in_engine else {}),
        )
        self.engine = AsyncLLM.from_engine_args(args)
        self.tokenizer = self.engine.get_tokenizer()
        eos = self.tokenizer.eos_token_id
        if in_engine:
            self._sentinel = resolve_sentinel(self.tokenizer, cfg.entropy_sentinel_token, (eos,))
        self._info = TierInfo(
            tier=self.tier,
            model=model_display_name(cfg.model),
            tokenizer_fingerprint=tokenizer_fingerprint(self.tokenizer),
            vocab_size=self.engine.model_config.get_vocab_size(),
            max_model_len=cfg.max_model_len,
            eos_token_ids=(eos,) if eos is not None else (),
            think_close_token_ids=tuple(self.tokenizer.encode(THINK_CLOSE_TEXT, add_special_tokens=False)),
            replica_id=self.replica_id,
            block_size=cfg.block_size,
        )
        if cfg.kv_sessions.enabled:
            self.sessions = kv.SessionPool(self._open_session, self._session_limits())
        await self._warm_up()

    def _session_limits(self) -> kv.SessionLimits:
        """Sessions get at most ``max_sessions`` model-runner slots and ``max_kv_share`` of the KV cache."""
        cfg = self.config
        blocks = getattr(self.engine.vllm_config.cache_config, "num_gpu_blocks", None) or 0
        kv_tokens = blocks * cfg.block_size or cfg.max_num_seqs * cfg.max_model_len
        s = cfg.kv_sessions
        return kv.SessionLimits(max_sessions=s.max_sessions or max(1, cfg.max_num_seqs // 2),
                                max_tokens=int(kv_tokens * s.max_kv_share), ttl_s=s.idle_ttl_s,
                                step_tokens=s.step_tokens)

    def _open_session(self, request_id: str) -> kv.EngineSession:
        from relay_ray.types import SegmentJob, StopRule

        engine_id = f"{request_id}-kv-{uuid.uuid4().hex[:6]}"
        params = self._sampling_params(SegmentJob(request_id, 0, StopRule(1)), 1)  # chunks bring their own
        return kv.EngineSession(request_id, lambda inputs: self.engine.generate(inputs, params, engine_id))

    def _chunk_inputs(self, job: SegmentJob) -> kv.InputFactory:
        """How ``job``'s session chunks reach the engine."""
        from vllm.engine.protocol import StreamingInput
        from vllm.inputs import TokensPrompt

        def make(token_ids: list[int], max_tokens: int):
            params = self._sampling_params(job, max_tokens)
            # vLLM's output processor keeps the logprobs setting of a session's *first* chunk:
            # a feed's chunk (none) followed by an entropy segment's (top-k) killed the engine
            # (AssertionError in its logprobs processor). Every chunk asks for the most, so the
            # setting never changes within a session (and every output's logprobs line up).
            params.logprobs = self.config.max_logprobs
            return StreamingInput(prompt=TokensPrompt(prompt_token_ids=token_ids), sampling_params=params)
        return make

    async def _warm_up(self) -> None:
        # The first request of a fresh engine pays one-off costs (seconds on CPU).
        from relay_ray.types import EntropyRule, SignalRequest, StopRule

        job = SegmentJob(
            request_id=f"warmup-{uuid.uuid4().hex[:8]}", segment_index=0,
            stop=StopRule(max_new_tokens=4, entropy=EntropyRule(2.0, above=True)),
            prefix_token_ids=tuple(self.tokenizer.encode("warm up")) or (0,),
            signals=SignalRequest(logprob=True, entropy=True, margin=True),
        )
        async for _ in self.stream_segment(job):
            pass
        if self._sentinel is not None:  # and the in-engine rule's path (fires at once: threshold 0)
            rule = StopRule(max_new_tokens=4, entropy=EntropyRule(0.0, above=True, commit=Commit.EXCLUSIVE))
            async for _ in self.stream_segment(replace(job, stop=rule, signals=SignalRequest())):
                pass
        if self.sessions is not None:  # the first streaming-input request pays its own one-off costs
            for kv_session in (KvSession.KEEP, KvSession.KEEP, KvSession.END):
                async for _ in self.stream_segment(replace(job, kv_session=kv_session)):
                    pass

    def describe(self) -> TierInfo:
        return self._info

    def prepare(self, prompt: PromptInput) -> PreparedPrompt:
        """Render chat messages with this model's template, then tokenize (token ids are
        checked against the vocabulary and decoded for text handoffs)."""
        if prompt.token_ids:
            info = self._info
            if len(prompt.token_ids) >= info.max_model_len or not all(
                    0 <= i < info.vocab_size for i in prompt.token_ids):
                raise RelayInputError("prompt.token_ids",
                                      f"at most {info.max_model_len - 1} ids, each in [0, {info.vocab_size})")
            return PreparedPrompt(token_ids=prompt.token_ids, text=self.tokenizer.decode(prompt.token_ids))
        if prompt.messages:
            messages = [{"role": m.role, "content": guard_control_tokens(m.content, self._control_tokens(),
                                                                         prompt.special_tokens, i)}
                        for i, m in enumerate(prompt.messages)]
            try:
                text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except Exception as exc:  # template errors are the caller's input problem
                raise RelayInputError("prompt.messages", f"cannot render the chat template: {exc}") from None
            ids = self.tokenizer.encode(text, add_special_tokens=False)
        else:
            text = prompt.text
            ids = self.tokenizer.encode(text)
        return PreparedPrompt(token_ids=tuple(ids), text=text)

    def _control_tokens(self) -> tuple[str, ...]:
        if self._controls is None:
            added = getattr(self.tokenizer, "get_added_vocab", dict)()
            self._controls = tuple(sorted({*self.tokenizer.all_special_tokens, *added}, key=len, reverse=True))
        return self._controls

    def _sampling_params(self, job: SegmentJob, max_tokens: int, prior_tokens: int | None = None):
        return engine_io.sampling_params(job, max_tokens, self.config.max_logprobs, self._sentinel, self._info,
                                         prior_tokens)

    def _segment_run(self, job: SegmentJob) -> SegmentRun:
        prefix = self.tokenizer.encode(job.prefix_text) if job.prefix_text is not None else job.prefix_token_ids
        info = self._info
        return SegmentRun(job, prefix, IncrementalDecoder(self.tokenizer, prefix),
                          max_model_len=self.config.max_model_len, eos_token_ids=info.eos_token_ids if info else ())

    async def stream_segment(self, job: SegmentJob) -> AsyncIterator[SegmentDelta | SegmentResult]:
        """Run one segment; yield the deltas its job asks for, then the result.

        The engine request is aborted as soon as the stop rule fires, when ``job.timeout_s``
        passes (raising :class:`TimeoutError`), or when the caller stops iterating
        (cancellation): vLLM's ``generate`` aborts its request when closed. Jobs asking for
        ``KvSession.KEEP`` run in the request's KV session when this tier keeps sessions
        (engines/session/), else (or when the session is lost midway) plainly.
        """
        t_submit = time.perf_counter()
        if job.kv_session is KvSession.END:
            if self.sessions is not None:
                self.sessions.end(job.request_id)
            yield SegmentResult((), "", FinishReason.LENGTH, replica_id=self.replica_id)
            return
        run = self._segment_run(job)
        timing, num_cached = SegmentTiming(), 0
        if not run.done:
            outcome = kv.SessionOutcome()
            async with _engine_errors(), asyncio.timeout(job.timeout_s or None):
                if self.sessions is not None and job.kv_session is KvSession.KEEP:
                    if job.prefill_only:
                        outcome.used = outcome.finished = await kv.feed(
                            self.sessions, job.request_id, run.engine_prefix_ids, self._chunk_inputs(job))
                    else:
                        async for delta in kv.generate(self.sessions, run, self._chunk_inputs(job), self._push_outputs,
                                                       outcome, t_submit):
                            yield delta
                if outcome.used:
                    num_cached = outcome.num_cached_tokens
                    timing = SegmentTiming(queue_ms=outcome.queue_ms, prefill_ms=outcome.prefill_ms)
                fresh, cap, timed = not outcome.used, self._first_chunk(job), outcome.used
                while not outcome.finished and not run.done:
                    # Plainly: the whole job, or the rest of it after a lost session or a first chunk.
                    async for item in self._plain(job, run, fresh, cap):
                        if isinstance(item, SegmentDelta):
                            yield item
                        else:
                            plain_timing, plain_cached = item
                            if not timed:  # a later chunk keeps the first one's timing
                                timing, num_cached, timed = plain_timing, plain_cached, True
                    if not cap:
                        break
                    fresh, cap = False, 0
            t_end = time.perf_counter()
            first = outcome.first_token_at or (t_submit + (timing.queue_ms + timing.prefill_ms) / 1000.0)
            timing = replace(timing, decode_ms=max(0.0, (t_end - first) * 1000.0), total_ms=(t_end - t_submit) * 1000.0)
        yield run.result(replica_id=self.replica_id, num_cached_tokens=num_cached, timing=timing)

    def _first_chunk(self, job: SegmentJob) -> int:
        """Tokens to ask the engine for first (0: all), see ``TierConfig.first_chunk_tokens``. Only
        entropy rules: they end R-Stitch's large segments after a token or two, while cue strings end
        long segments, for which a first chunk would only add an engine request."""
        return self.config.first_chunk_tokens if job.stop.entropy is not None and not job.prefill_only else 0

    async def _plain(self, job: SegmentJob, run: SegmentRun, fresh: bool,
                     cap: int = 0) -> AsyncIterator[SegmentDelta | tuple[SegmentTiming, int]]:
        """One engine request continuing ``run`` (from its prefix if ``fresh``, else from the
        tokens it has), for at most ``cap`` tokens if set (the engine's end at the cap does not
        end ``run``); yields deltas, then (time-to-first-token split, cached tokens)."""
        from vllm.inputs import TokensPrompt

        t_submit, submitted_at = time.perf_counter(), time.monotonic()  # vLLM stamps the engine's events on the latter
        if fresh:
            ids, max_tokens = run.engine_prefix_ids, run.max_engine_tokens
        else:
            ids = run.prefix_ids + run.stopper.token_ids
            max_tokens = run.max_engine_tokens - (run.stopper.num_tokens - run.num_resumed)
        capped = 0 < cap < max_tokens
        max_tokens = min(max_tokens, cap) if capped else max_tokens
        rid = f"{job.request_id}-{job.segment_index}-{uuid.uuid4().hex[:6]}"
        params = self._sampling_params(job, max_tokens, prior_tokens=run.stopper.num_tokens)
        sentinel = self._sentinel if params.extra_args else None
        stream = self.engine.generate(TokensPrompt(prompt_token_ids=list(ids)), params, rid)
        timing, num_cached = None, 0
        try:
            async for out in stream:
                if timing is None:
                    timing = engine_io.ttft_split(out, (time.perf_counter() - t_submit) * 1000.0, submitted_at,
                                              time.monotonic())
                num_cached = max(num_cached, out.num_cached_tokens or 0)
                if self._push_outputs(run, out, at_cap=capped, sentinel=sentinel):
                    break
                delta = run.take_delta()
                if delta is not None:
                    yield delta
        finally:
            await stream.aclose()  # aborts the engine request if it is still running
        yield timing or SegmentTiming(), num_cached

    def _push_outputs(self, run: SegmentRun, out, at_cap: bool = False, sentinel: int | None = None) -> bool:
        vocab_size = self._info.vocab_size if self._info else 2
        return engine_io.push_outputs(run, out, self.config.max_logprobs, vocab_size, at_cap, sentinel)

    async def check_health(self) -> None:
        """Raises if the engine is dead."""
        if self.engine is None:
            raise RuntimeError(f"{self.tier.value} tier engine is not running")
        await self.engine.check_health()

    def shutdown(self) -> None:
        if self.sessions is not None:
            self.sessions.close_all()
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
