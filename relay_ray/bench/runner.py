"""Run one scenario against a served relay over gRPC, ``concurrency`` requests at a time."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from relay_ray.bench.scenarios import Scenario, bench_prompt
from relay_ray.client import RelayClient, build_request
from relay_ray.types import Sampling
from relay_ray.v1 import common_pb2 as cpb


@dataclass(frozen=True)
class Handoff:
    """The switch into one segment (every segment after the first)."""

    into_large: bool
    controller_ms: float
    transport_ms: float
    queue_ms: float
    prefill_ms: float  # the receiving tier's delta prefill, up to its first new token
    num_prompt_tokens: int
    num_cached_tokens: int

    @property
    def total_ms(self) -> float:
        return self.controller_ms + self.transport_ms + self.queue_ms + self.prefill_ms


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it."""

    latency_ms: float
    large_tokens: int
    small_tokens: int
    first_large: bool
    large_decode_ms_per_token: list[float]  # per segment of >1 token
    small_decode_ms_per_token: list[float]
    handoffs: list[Handoff]
    first_num_cached_tokens: int  # prompt tokens the first segment found in the prefix cache

    @property
    def num_tokens(self) -> int:
        return self.large_tokens + self.small_tokens


@dataclass(frozen=True)
class Run:
    scenario: Scenario
    concurrency: int
    samples: list[Sample]
    wall_s: float


def _sample(response, latency_ms: float) -> Sample:
    per_token = {True: [], False: []}
    handoffs = []
    for i, seg in enumerate(response.segments):
        large = seg.tier == cpb.TIER_LARGE
        if seg.num_tokens > 1:
            per_token[large].append(seg.timing.decode_ms / (seg.num_tokens - 1))
        if i > 0:
            handoffs.append(Handoff(large, seg.controller_ms, seg.transport_ms, seg.timing.queue_ms,
                                    seg.timing.prefill_ms, seg.num_prompt_tokens, seg.num_cached_tokens))
    first_large = bool(response.segments) and response.segments[0].tier == cpb.TIER_LARGE
    first_cached = response.segments[0].num_cached_tokens if response.segments else 0
    return Sample(latency_ms, response.stats.large_tokens, response.stats.small_tokens, first_large,
                  per_token[True], per_token[False], handoffs, first_cached)


def run_scenario(client: RelayClient, scenario: Scenario, concurrency: int, num_requests: int,
                 max_new_tokens: int, label: str | None = None, prompt_offset: int = 0) -> Run:
    """Send ``num_requests`` requests, at most ``concurrency`` in flight; EOS is ignored so
    every request writes exactly ``max_new_tokens`` tokens. ``label`` names a progress bar.

    Request ``i`` sends ``bench_prompt(prompt_offset + i)``: runs on the same engines must use
    disjoint offsets, or a later run finds its prompts in the prefix cache and skips the
    prefill an earlier run paid (the relay would look faster than large-only for free)."""
    from relay_ray.bench.console import progress

    sampling = Sampling(ignore_eos=True)
    bar = progress(label, num_requests) if label else None
    lock = threading.Lock()

    def one(i: int) -> Sample:
        request = build_request(bench_prompt(prompt_offset + i), scenario.policy, scenario.params,
                                sampling, max_new_tokens)
        t0 = time.perf_counter()
        response = client.generate(request)
        sample = _sample(response, (time.perf_counter() - t0) * 1000.0)
        if bar is not None:
            with lock:
                bar.update(1)
        return sample

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        samples = list(pool.map(one, range(num_requests)))
    if bar is not None:
        bar.close()
    return Run(scenario, concurrency, samples, time.perf_counter() - started)
