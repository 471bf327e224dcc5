"""A tier's engine: one vLLM ``AsyncLLM`` that runs segment jobs.

The stop rule is evaluated here, on every token as it streams out of the engine, and the
engine request is aborted the moment the rule fires: no per-token round trip leaves the
replica. ``vllm`` is imported lazily so that importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator

from relay_ray.config import TierConfig
from relay_ray.engines.detok import IncrementalDecoder
from relay_ray.engines.signals import normalized_entropy, top_margin
from relay_ray.engines.stopping import SegmentStopper, StopDecision, delta_due
from relay_ray.errors import RelayInputError
from relay_ray.types import (
    FinishReason,
    PreparedPrompt,
    PromptInput,
    SegmentDelta,
    SegmentJob,
    SegmentResult,
    SegmentTiming,
    Tier,
    TierInfo,
    TokenSignals,
)


def tokenizer_fingerprint(tokenizer) -> str:
    """Identical for tokenizers that map every string to the same ids."""
    payload = json.dumps(
        {"vocab": tokenizer.get_vocab(), "special": sorted(map(str, tokenizer.all_special_tokens))},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def apply_cpu_env(config: TierConfig) -> None:
    """vLLM's CPU backend reads these at engine start (set before the engine spawns)."""
    if config.kv_cache_space_gib is not None:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(config.kv_cache_space_gib)
    if config.cpu_threads_bind is not None:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = config.cpu_threads_bind
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


class VllmTierEngine:
    """Owns one ``AsyncLLM``; call :meth:`start` once before use."""

    def __init__(self, tier: Tier, config: TierConfig, replica_id: str = "") -> None:
        self.tier = tier
        self.config = config
        self.replica_id = replica_id or f"{tier.value}-{os.getpid()}"
        self.engine = None
        self.tokenizer = None
        self._info: TierInfo | None = None

    async def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cfg = self.config
        apply_cpu_env(cfg)
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
            **({"speculative_config": cfg.speculative.engine_config()} if cfg.speculative else {}),
            **({"distributed_executor_backend": "ray"} if cfg.on_gpu and cfg.tensor_parallel_size > 1 else {}),
        )
        self.engine = AsyncLLM.from_engine_args(args)
        self.tokenizer = self.engine.get_tokenizer()
        eos = self.tokenizer.eos_token_id
        self._info = TierInfo(
            tier=self.tier,
            model=cfg.model,
            tokenizer_fingerprint=tokenizer_fingerprint(self.tokenizer),
            vocab_size=self.engine.model_config.get_vocab_size(),
            max_model_len=cfg.max_model_len,
            eos_token_ids=(eos,) if eos is not None else (),
            think_close_token_ids=tuple(self.tokenizer.encode("\n</think>", add_special_tokens=False)),
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
        """Render chat messages with this model's template, then tokenize (token ids are
        checked against the vocabulary and decoded for text handoffs)."""
        if prompt.token_ids:
            vocab_size = self._info.vocab_size
            if not all(0 <= i < vocab_size for i in prompt.token_ids):
                raise RelayInputError("prompt.token_ids", f"every id must be in [0, {vocab_size})")
            return PreparedPrompt(token_ids=prompt.token_ids, text=self.tokenizer.decode(prompt.token_ids))
        if prompt.messages:
            messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
            try:
                text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except Exception as exc:  # template errors are the caller's input problem
                raise RelayInputError("prompt.messages", f"cannot render the chat template: {exc}") from None
            ids = self.tokenizer.encode(text, add_special_tokens=False)
        else:
            text = prompt.text
            ids = self.tokenizer.encode(text)
        return PreparedPrompt(token_ids=tuple(ids), text=text)

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

    async def stream_segment(self, job: SegmentJob) -> AsyncIterator[SegmentDelta | SegmentResult]:
        """Run one segment; yield deltas every ``job.stream_interval_tokens``, then the result."""
        from vllm.inputs import TokensPrompt

        t_submit = time.perf_counter()
        if job.prefix_text is not None:
            prefix = self.tokenizer.encode(job.prefix_text)
        else:
            prefix = list(job.prefix_token_ids)
        max_tokens = min(job.stop.max_new_tokens, self.config.max_model_len - len(prefix))
        if job.prefill_only:
            max_tokens = min(max_tokens, 1)
        decoder = IncrementalDecoder(self.tokenizer, prefix)
        eos = () if job.sampling.ignore_eos or not self._info else self._info.eos_token_ids
        stopper = SegmentStopper(job.stop, decoder.context_text() if job.stop.word_start else "", eos)
        sig = job.signals
        want_entropy = sig.entropy or job.stop.entropy is not None
        logprob_list, entropy_list, margin_list = [], [], []
        decision: StopDecision | None = None
        finish_reason = FinishReason.LENGTH
        num_cached = 0
        queue_ms = prefill_ms = 0.0
        t_first = None
        emitted = 0
        if max_tokens <= 0:
            decision = StopDecision(FinishReason.LENGTH, 0)
        else:
            rid = f"{job.request_id}-{job.segment_index}-{uuid.uuid4().hex[:6]}"
            params = self._sampling_params(job, max_tokens)
            k = self.config.max_logprobs
            async for out in self.engine.generate(TokensPrompt(prompt_token_ids=prefix), params, rid):
                if t_first is None:
                    t_first = time.perf_counter()
                    queue_ms, prefill_ms = self._ttft_split(out, (t_first - t_submit) * 1000.0)
                num_cached = max(num_cached, out.num_cached_tokens or 0)
                c = out.outputs[0]
                for i, token_id in enumerate(c.token_ids):
                    piece = decoder.push(token_id)
                    entropy = None
                    if c.logprobs:
                        top = [lp.logprob for lp in c.logprobs[i].values() if lp.rank is not None and lp.rank <= k]
                        if sig.logprob:
                            logprob_list.append(c.logprobs[i][token_id].logprob)
                        if want_entropy:
                            entropy = normalized_entropy(top, self._info.vocab_size if self._info else 2)
                            entropy_list.append(entropy)
                        if sig.margin:
                            margin_list.append(top_margin(top))
                    decision = stopper.push(token_id, piece, entropy)
                    if decision is not None:
                        break
                if decision is not None:
                    if not out.finished:
                        await self.engine.abort(rid)
                    break
                if out.finished:
                    finish_reason = FinishReason.EOS if c.finish_reason == "stop" else FinishReason.LENGTH
                    break
                if delta_due(job, len(prefix), emitted, stopper.num_tokens):
                    yield SegmentDelta(tuple(stopper.token_ids[emitted:]), stopper.text[len(stopper.kept_text(emitted)):])
                    emitted = stopper.num_tokens
        t_end = time.perf_counter()
        n_kept = decision.num_kept_tokens if decision else stopper.num_tokens
        num_dropped = stopper.num_tokens - n_kept
        if job.prefill_only:  # the sampled token is not part of any answer
            n_kept = num_dropped = 0
        keep = slice(0, n_kept)
        yield SegmentResult(
            token_ids=tuple(stopper.token_ids[keep]),
            text=stopper.kept_text(n_kept),
            finish_reason=decision.finish_reason if decision else finish_reason,
            text_offsets=tuple(stopper.text_offsets[keep]),
            matched_stop=decision.matched_stop if decision else "",
            num_dropped_tokens=num_dropped,
            num_prompt_tokens=len(prefix),
            num_cached_tokens=num_cached,
            signals=TokenSignals(tuple(logprob_list[keep]), tuple(entropy_list[keep]), tuple(margin_list[keep])),
            timing=SegmentTiming(
                queue_ms=queue_ms,
                prefill_ms=prefill_ms,
                decode_ms=(t_end - t_first) * 1000.0 if t_first else 0.0,
                total_ms=(t_end - t_submit) * 1000.0,
            ),
            replica_id=self.replica_id,
        )

    @staticmethod
    def _ttft_split(out, ttft_ms: float) -> tuple[float, float]:
        """Split time-to-first-token into queueing and prefill using engine timestamps."""
        m = getattr(out, "metrics", None)
        queued, scheduled, first = (getattr(m, a, 0.0) for a in ("queued_ts", "scheduled_ts", "first_token_ts"))
        if m is None or not (queued and scheduled and first) or first < scheduled:
            return 0.0, ttft_ms
        queue_ms = max(0.0, (scheduled - queued) * 1000.0)
        return queue_ms, max(0.0, ttft_ms - queue_ms)

    async def check_health(self) -> None:
        """Raises if the engine is dead."""
        if self.engine is None:
            raise RuntimeError(f"{self.tier.value} tier engine is not running")
        await self.engine.check_health()

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
