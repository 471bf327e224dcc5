"""Send an evaluation dataset through a running relay (gRPC) for one policy run.

Each item is one greedy chat request (the prompt as a user message, rendered by the large
tier's chat template). Request ids are ``LABEL/ITEM_ID`` (characters the service refuses in a
request id, such as spaces, become ``_``), so seeded policies (``random``)
route an item the same way on every run. A failed request is recorded with its error and
counts as wrong; the run goes on. Every result keeps its segments' token counts, prefix-cache
counts and timings, from which :mod:`relay_ray.quality.compute` derives compute and ideal time.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from pydantic import BaseModel, ConfigDict

from relay_ray.quality.dataset import Item
from relay_ray.quality.extract import AnswerFormat, extract, same_answer
from relay_ray.quality.runs import PolicyRun

_NOT_IN_REQUEST_IDS = re.compile(r"[^A-Za-z0-9._:/@+=-]")  # controller/limits.py: REQUEST_ID_PATTERN


def request_id(label: str, item_id: str) -> str:
    """``LABEL/ITEM_ID`` with every character a request id may not hold replaced by ``_``."""
    return _NOT_IN_REQUEST_IDS.sub("_", f"{label}/{item_id}")


class SegmentStat(BaseModel):
    """One segment of a response: who wrote it, what it cost the tier, and the switch into it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    large: bool
    num_tokens: int  # kept
    num_dropped: int = 0  # generated, then dropped (exclusive commit, removed commands)
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0  # of the prompt tokens, served from the tier's prefix cache
    queue_ms: float = 0.0
    prefill_ms: float = 0.0  # the tier's time to the first new token
    decode_ms: float = 0.0  # after the first new token
    handoff_ms: float = 0.0  # controller + transport before this segment
    engine_step_ms: float = 0.0  # of prefill_ms, the engine core's own step (0: not reported)
    engine_in_ms: float = 0.0  # of prefill_ms, from the tier's call until the engine core queued it
    engine_out_ms: float = 0.0  # of prefill_ms, from the engine core's first token back to the tier

    @property
    def num_generated(self) -> int:
        return self.num_tokens + self.num_dropped

    @property
    def computed_tokens(self) -> int:
        """Token positions the tier ran through its model: the uncached part of the prefix
        (prefill) and every generated token but the last (each is fed back once to decode the
        next; the last one is computed by the next segment that continues it, if any)."""
        return max(0, self.num_prompt_tokens - self.num_cached_tokens) + max(0, self.num_generated - 1)


class ItemResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    correct: bool
    predicted: str | None
    gold: str
    large_tokens: int = 0
    small_tokens: int = 0
    num_switches: int = 0
    latency_ms: float = 0.0  # measured by the relay controller
    client_ms: float = 0.0  # measured around the gRPC call
    finish_reason: str = ""
    error: str = ""
    text: str = ""
    token_ids: tuple[int, ...] = ()  # the answer's token ids, kept with the text (token-id handoff)
    segments: tuple[SegmentStat, ...] = ()

    @property
    def large_segments(self) -> int:
        return sum(1 for s in self.segments if s.large)


def segment_stats(response) -> tuple[SegmentStat, ...]:
    """The :class:`SegmentStat` of every segment of a ``GenerateResponse``."""
    from relay_ray.v1 import common_pb2

    return tuple(
        SegmentStat(large=seg.tier == common_pb2.TIER_LARGE, num_tokens=seg.num_tokens,
                    num_dropped=seg.num_dropped_tokens, num_prompt_tokens=seg.num_prompt_tokens,
                    num_cached_tokens=seg.num_cached_tokens, queue_ms=seg.timing.queue_ms,
                    prefill_ms=seg.timing.prefill_ms, decode_ms=seg.timing.decode_ms, handoff_ms=seg.handoff_ms,
                    engine_step_ms=seg.timing.engine_step_ms, engine_in_ms=seg.timing.engine_in_ms,
                    engine_out_ms=seg.timing.engine_out_ms)
        for seg in response.segments)


def run_one(client, item: Item, run: PolicyRun, params: dict, fmt: AnswerFormat, max_new_tokens: int,
         keep_text: bool) -> ItemResult:
    import grpc

    from relay_ray.client import build_request
    from relay_ray.types import ChatMessage
    from relay_ray.v1 import common_pb2

    fmt = item.answer_format or fmt
    request = build_request([ChatMessage("user", item.prompt)], run.policy, params,
                            max_new_tokens=max_new_tokens, request_id=request_id(run.label, item.id))
    started = time.perf_counter()
    try:
        response = client.generate(request)
    except grpc.RpcError as exc:
        return ItemResult(id=item.id, correct=False, predicted=None, gold=item.answer,
                          error=f"{exc.code().name}: {exc.details()}")
    client_ms = (time.perf_counter() - started) * 1000.0
    s = response.stats
    predicted = extract(response.text, fmt)
    return ItemResult(
        id=item.id, correct=same_answer(predicted, item.answer), predicted=predicted, gold=item.answer,
        large_tokens=s.large_tokens, small_tokens=s.small_tokens, num_switches=s.num_switches,
        latency_ms=s.latency_ms, client_ms=client_ms,
        finish_reason=common_pb2.FinishReason.Name(s.finish_reason).removeprefix("FINISH_REASON_").lower(),
        text=response.text if keep_text else "", token_ids=tuple(response.token_ids) if keep_text else (),
        segments=segment_stats(response),
    )


def run_items(client, items: list[Item], run: PolicyRun, params: dict, fmt: AnswerFormat,
              max_new_tokens: int, concurrency: int = 1, keep_text: bool = False,
              label: str | None = None) -> list[ItemResult]:
    """Results in item order; ``concurrency`` requests in flight (1 = the papers' batch-1
    latency). A progress bar named ``label`` (default: the run's) shows the running accuracy."""
    from relay_ray.bench.console import progress

    results: list[ItemResult | None] = [None] * len(items)
    right = 0
    bar = progress(label or run.label, len(items))
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {pool.submit(run_one, client, item, run, params, fmt, max_new_tokens, keep_text): i
                   for i, item in enumerate(items)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            right += int(results[i].correct)
            bar.update(1)
            bar.set_postfix_str(f"acc {right / bar.n:.3f}", refresh=False)
    bar.close()
    return [r for r in results if r is not None]
