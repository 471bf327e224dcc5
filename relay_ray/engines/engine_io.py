"""What goes into one vLLM request for a segment job and what comes out of it: the sampling
parameters (with R-Stitch's entropy rule in the engine's sampler when it applies), one engine
step's outputs fed to the segment's run, and time-to-first-token split by the engine's own
timestamps. Functions of their arguments only; ``vllm`` is imported lazily."""

from __future__ import annotations

import math
from dataclasses import replace

from relay_ray.engines.segment_run import SegmentRun, TokenOutput
from relay_ray.types import Commit, SegmentJob, SegmentTiming, TierInfo


def runs_in_engine(job: SegmentJob, sentinel: int | None) -> bool:
    """Whether ``job``'s entropy rule runs in the engine's sampler (engines/entropy_stop.py): the
    tier has a sentinel token, and the rule drops the token it fires on for a job that asks for
    no per-token signals."""
    rule = job.stop.entropy
    return (sentinel is not None and rule is not None and rule.above and rule.commit is Commit.EXCLUSIVE
            and not job.signals.any and not job.prefill_only)


def sampling_params(job: SegmentJob, max_tokens: int, max_logprobs: int, sentinel: int | None,
                    info: TierInfo | None, prior_tokens: int | None = None):
    """vLLM ``SamplingParams`` for ``job``. ``prior_tokens`` (the tokens the segment has before
    this engine request) lets its entropy rule run in the engine when :func:`runs_in_engine`;
    otherwise the rule reads the top ``max_logprobs`` log-probabilities of every token."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    from relay_ray.engines.entropy_stop import stop_args

    s = job.sampling
    extra, stop_ids = None, None
    if prior_tokens is not None and info is not None and runs_in_engine(job, sentinel):
        extra = stop_args(job.stop.entropy.threshold, max(0, job.stop.min_new_tokens - 1 - prior_tokens),
                          sentinel, max_logprobs, info.vocab_size,
                          () if s.ignore_eos else info.eos_token_ids, s.temperature == 0)
        stop_ids, logprobs = [sentinel], None
    else:
        needs_topk = job.stop.entropy is not None or job.signals.entropy or job.signals.margin
        logprobs = max_logprobs if needs_topk else (0 if job.signals.logprob else None)
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
        stop_token_ids=stop_ids,
        extra_args=extra,
    )


def push_outputs(run: SegmentRun, out, max_logprobs: int, vocab_size: int, at_cap: bool = False,
                 sentinel: int | None = None) -> bool:
    """Feed one engine step's new tokens (a vLLM ``RequestOutput``) to ``run``; True when the
    segment is over. With ``at_cap``, the engine ending the request at its token limit does not
    end ``run``. ``sentinel``: the token the engine writes where the job's entropy rule fired."""
    c = out.outputs[0]
    for i, token_id in enumerate(c.token_ids):
        token = TokenOutput(token_id)
        if token_id == sentinel:
            token = TokenOutput(token_id, entropy=math.inf)  # fired: the rule drops this position
        elif c.logprobs:
            step = c.logprobs[i]
            top = [lp.logprob for lp in step.values() if lp.rank is not None and lp.rank <= max_logprobs]
            logprob = step[token_id].logprob if token_id in step else None
            token = TokenOutput.from_top_logprobs(token_id, logprob, top, vocab_size, run.wants_entropy,
                                                  run.job.signals.margin)
        if run.push(token):
            return True
    if out.finished:
        if at_cap and c.finish_reason == "length":
            return False  # the first chunk's limit, not the segment's: the caller continues
        run.engine_finished(eos=c.finish_reason == "stop")
        return True
    return False


def ttft_split(out, ttft_ms: float, submitted_at: float, received_at: float) -> SegmentTiming:
    """Split time-to-first-token using the engine core's timestamps (``time.monotonic``, one
    clock for every process of the machine): into the engine, its queue, its step, and back to
    the tier (types.SegmentTiming)."""
    m = getattr(out, "metrics", None)
    queued, scheduled, first = (getattr(m, a, 0.0) for a in ("queued_ts", "scheduled_ts", "first_token_ts"))
    if m is None or not (queued and scheduled and first) or not queued <= scheduled <= first:
        return SegmentTiming(prefill_ms=ttft_ms)
    queue_ms = (scheduled - queued) * 1000.0
    timing = SegmentTiming(queue_ms=queue_ms, prefill_ms=max(0.0, ttft_ms - queue_ms))
    if not (submitted_at <= queued and first <= received_at):  # not stamped on this process's clock
        return timing
    return replace(timing, engine_in_ms=(queued - submitted_at) * 1000.0,
                   engine_step_ms=(first - scheduled) * 1000.0, engine_out_ms=(received_at - first) * 1000.0)
