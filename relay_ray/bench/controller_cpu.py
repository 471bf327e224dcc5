"""Micro-benchmark: CPU time the controller spends per segment, without engines.

The controller runs real policies over :class:`InstantTier` s that answer at once from a
fixed word stream (real stop rules, entropies from a seeded sequence). The tiers' own CPU
time is measured and subtracted, so the figure is the controller's: policy planning and
advancing, job building, state updates, records and the telemetry observer (OpenTelemetry
spans for every request and segment; Ray metric calls stubbed, the span exporter left out).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from relay_ray.controller import RelayController
from relay_ray.engines.stopping import SegmentStopper
from relay_ray.types import (
    FinishReason,
    PreparedPrompt,
    PromptInput,
    RelayRequest,
    SegmentResult,
    Tier,
    TierInfo,
    TokenSignals,
)

WORDS = (" So", " the", " sum", " is", " 42", ".", " Now", " compute", " 7", " times", " 6", ",",
         " Wait", " check", " Therefore", " we", " get", "\n", " In", " summary")
EOS = len(WORDS)


class InstantTier:
    """Answers every segment job immediately; counts its own CPU time in ``cpu_s``."""

    def __init__(self, tier: Tier, seed: int) -> None:
        self.tier = tier
        self.cpu_s = 0.0
        rng = random.Random(seed)
        self.stream = [rng.randrange(len(WORDS)) for _ in range(4096)]
        self.entropy = [rng.random() for _ in range(4096)]

    async def describe(self) -> TierInfo:
        return TierInfo(self.tier, "instant", "shared", len(WORDS) + 1, 1 << 20, (EOS,))

    async def prepare(self, prompt: PromptInput) -> PreparedPrompt:
        return PreparedPrompt(tuple(range(64)), prompt.text)

    async def stream_segment(self, job) -> AsyncIterator[SegmentResult]:
        t0 = time.process_time()
        start = len(job.prefix_token_ids)
        stopper = SegmentStopper(job.stop, eos_token_ids=(EOS,))
        entropies, decision = [], None
        for pos in range(start, start + job.stop.max_new_tokens):
            token = self.stream[pos % len(self.stream)]
            entropies.append(self.entropy[pos % len(self.entropy)])
            decision = stopper.push(token, WORDS[token], entropies[-1])
            if decision is not None:
                break
        kept = decision.num_kept_tokens if decision else stopper.num_tokens
        result = SegmentResult(
            token_ids=tuple(stopper.token_ids[:kept]), text=stopper.kept_text(kept),
            finish_reason=decision.finish_reason if decision else FinishReason.LENGTH,
            text_offsets=tuple(stopper.text_offsets[:kept]),
            matched_stop=decision.matched_stop if decision else "",
            num_dropped_tokens=stopper.num_tokens - kept, num_prompt_tokens=start,
            signals=TokenSignals(entropy=tuple(entropies[:kept]) if job.signals.entropy else ()),
        )
        self.cpu_s += time.process_time() - t0
        yield result


@dataclass(frozen=True)
class ControllerCpu:
    policy: str
    num_requests: int
    num_segments: int
    controller_cpu_ms_per_segment: float
    tier_cpu_ms_per_segment: float


POLICIES = {
    "fixed-ratio 8/24": ("fixed-ratio", {"large_tokens": 8, "small_tokens": 24}),
    "rstitch tau 0.5": ("rstitch", {"tau": 0.5}),
    "relaygen": ("relaygen", {"cues": (" So", " Therefore", " In summary"), "sentence_ends": (".", "\n")}),
}


class _NullMetrics:
    """Metric calls without a Ray metrics backend (spans are real)."""

    def inc(self, spec, value: float = 1.0, **tags: str) -> None: ...
    def observe(self, spec, value: float, **tags: str) -> None: ...
    def set(self, spec, value: float, **tags: str) -> None: ...


def _telemetry(record_spans: bool):
    """The serving observer. With ``record_spans`` this process's global tracer provider
    becomes a real OpenTelemetry SDK one (spans are created, sampled and ended; only the
    exporter is left out); it can be set once per process, so tests pass False."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from relay_ray.telemetry.observer import TelemetryObserver

    if record_spans and not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    return TelemetryObserver(_NullMetrics())


async def _measure(label: str, num_requests: int, max_new_tokens: int, record_spans: bool) -> ControllerCpu:
    policy, params = POLICIES[label]
    tiers = {Tier.LARGE: InstantTier(Tier.LARGE, 1), Tier.SMALL: InstantTier(Tier.SMALL, 1)}
    controller = RelayController(tiers, observer=_telemetry(record_spans))
    segments = 0
    for i in range(3):  # warm caches and imports
        await controller.run(RelayRequest(PromptInput(text="warm"), policy, params,
                                          max_new_tokens=max_new_tokens, request_id=f"w{i}"))
    for tier in tiers.values():
        tier.cpu_s = 0.0
    t0 = time.process_time()
    for i in range(num_requests):
        result = await controller.run(RelayRequest(
            PromptInput(text=f"q{i}"), policy, params, max_new_tokens=max_new_tokens, request_id=f"r{i}"))
        segments += result.stats.num_segments
    total_s = time.process_time() - t0
    tier_s = sum(t.cpu_s for t in tiers.values())
    return ControllerCpu(label, num_requests, segments, 1000.0 * (total_s - tier_s) / segments,
                         1000.0 * tier_s / segments)


def run(num_requests: int = 200, max_new_tokens: int = 256, record_spans: bool = True) -> list[ControllerCpu]:
    return [asyncio.run(_measure(label, num_requests, max_new_tokens, record_spans)) for label in POLICIES]


def table(rows: list[ControllerCpu]) -> str:
    from relay_ray.bench.console import table as console_table

    header = ["policy", "requests", "segments", "controller CPU ms / segment", "(instant tiers, excluded) ms / segment"]
    return console_table(header, [[r.policy, r.num_requests, r.num_segments, f"{r.controller_cpu_ms_per_segment:.3f}",
                                   f"{r.tier_cpu_ms_per_segment:.3f}"] for r in rows])
