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
from relay_ray.engines.lifecycle import bind_to_replica
from relay_ray.engines.prompts import guard_control_tokens, model_display_name, tokenizer_fingerprint
from relay_ray.engines.segment_run import SegmentRun, TokenOutput
from relay_ray.errors import FailureCause, RelayInputError, TierUnavailableError
from relay_ray.types import (
    THINK_CLOSE_TEXT,
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

    async def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cfg = self.config
        apply_cpu_env(cfg)
        bind_to_replica()  # the engine core process must not outlive this one
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
        )
        self.engine = AsyncLLM.from_engine_args(args)
        self.tokenizer = self.engine.get_tokenizer()
        eos = self.tokenizer.eos_token_id
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
        await self._warm_up()

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

    def describe(self) -> TierInfo:
        return self._info

    def prepare(self, prompt: PromptInput) -> PreparedPrompt:
        """Render chat messages with this model's template, then tokenize."""
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

    def _sampling_params(self, job: SegmentJob, max_tokens: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        needs_topk = job.stop.entropy is not None or job.signals.entropy or job.signals.margin
        logprobs = self.config.max_logprobs if needs_topk else (0 if job.signals.logprob else None)
        s = job.sampling
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k if s.top_k > 0 else 0,
            seed=s.seed,
            ignore_eos=s.ignore_eos,
            logprobs=logprobs,
            output_kind=RequestOutputKind.DELTA,
            detokenize=False,  # the tier decodes what it keeps (engines/detok.py)
            stream_interval=1,
        )

    def _segment_run(self, job: SegmentJob) -> SegmentRun:
        prefix = self.tokenizer.encode(job.prefix_text) if job.prefix_text is not None else job.prefix_token_ids
        info = self._info
        return SegmentRun(job, prefix, IncrementalDecoder(self.tokenizer, prefix),
                          max_model_len=self.config.max_model_len, eos_token_ids=info.eos_token_ids if info else ())

    async def stream_segment(self, job: SegmentJob) -> AsyncIterator[SegmentDelta | SegmentResult]:
        """Run one segment; yield the deltas its job asks for, then the result.

        The engine request is aborted as soon as the stop rule fires, when ``job.timeout_s``
        passes (raising :class:`TimeoutError`), or when the caller stops iterating
        (cancellation): vLLM's ``generate`` aborts its request when closed.
        """
        from vllm.inputs import TokensPrompt

        t_submit = time.perf_counter()
        run = self._segment_run(job)
        timing, num_cached = SegmentTiming(), 0
        if not run.done:
            rid = f"{job.request_id}-{job.segment_index}-{uuid.uuid4().hex[:6]}"
            stream = self.engine.generate(TokensPrompt(prompt_token_ids=run.engine_prefix_ids),
                                          self._sampling_params(job, run.max_engine_tokens), rid)
            t_first = None
            try:
                async with _engine_errors(), asyncio.timeout(job.timeout_s or None):
                    async for out in stream:
                        if t_first is None:
                            t_first = time.perf_counter()
                            timing = self._ttft_split(out, (t_first - t_submit) * 1000.0)
                        num_cached = max(num_cached, out.num_cached_tokens or 0)
                        if self._push_outputs(run, out):
                            break
                        delta = run.take_delta()
                        if delta is not None:
                            yield delta
            finally:
                await stream.aclose()  # aborts the engine request if it is still running
            t_end = time.perf_counter()
            timing = replace(timing, decode_ms=(t_end - t_first) * 1000.0 if t_first else 0.0,
                             total_ms=(t_end - t_submit) * 1000.0)
        yield run.result(replica_id=self.replica_id, num_cached_tokens=num_cached, timing=timing)

    def _push_outputs(self, run: SegmentRun, out) -> bool:
        """Feed one engine step's new tokens to ``run``; True when the segment is over."""
        c = out.outputs[0]
        k = self.config.max_logprobs
        vocab_size = self._info.vocab_size if self._info else 2
        for i, token_id in enumerate(c.token_ids):
            token = TokenOutput(token_id)
            if c.logprobs:
                step = c.logprobs[i]
                top = [lp.logprob for lp in step.values() if lp.rank is not None and lp.rank <= k]
                logprob = step[token_id].logprob if token_id in step else None
                token = TokenOutput.from_top_logprobs(token_id, logprob, top, vocab_size, run.wants_entropy,
                                                      run.job.signals.margin)
            if run.push(token):
                return True
        if out.finished:
            run.engine_finished(eos=c.finish_reason == "stop")
            return True
        return False

    @staticmethod
    def _ttft_split(out, ttft_ms: float) -> SegmentTiming:
        """Split time-to-first-token into queueing and prefill using engine timestamps."""
        m = getattr(out, "metrics", None)
        queued, scheduled, first = (getattr(m, a, 0.0) for a in ("queued_ts", "scheduled_ts", "first_token_ts"))
        if m is None or not (queued and scheduled and first) or first < scheduled:
            return SegmentTiming(prefill_ms=ttft_ms)
        queue_ms = max(0.0, (scheduled - queued) * 1000.0)
        return SegmentTiming(queue_ms=queue_ms, prefill_ms=max(0.0, ttft_ms - queue_ms))

    async def check_health(self) -> None:
        """Raises if the engine is dead."""
        if self.engine is None:
            raise RuntimeError(f"{self.tier.value} tier engine is not running")
        await self.engine.check_health()

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
