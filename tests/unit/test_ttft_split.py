"""The tier splits a segment's time to first token with the engine core's own timestamps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from relay_ray.engines.engine_io import ttft_split
from relay_ray.types import SegmentTiming


def _out(queued: float, scheduled: float, first: float):
    return SimpleNamespace(metrics=SimpleNamespace(queued_ts=queued, scheduled_ts=scheduled, first_token_ts=first))


def test_time_to_first_token_splits_into_engine_in_queue_step_and_out():
    # submitted at 10.000 s, queued 10.004, scheduled 10.005, first token 10.055, received 10.060
    timing = ttft_split(_out(10.004, 10.005, 10.055), 60.0, 10.000, 10.060)
    assert timing.queue_ms == pytest.approx(1.0)
    assert timing.prefill_ms == pytest.approx(59.0)
    assert (timing.engine_in_ms, timing.engine_step_ms, timing.engine_out_ms) == pytest.approx((4.0, 50.0, 5.0))
    assert timing.engine_in_ms + timing.queue_ms + timing.engine_step_ms + timing.engine_out_ms == pytest.approx(60.0)


def test_timestamps_of_another_clock_keep_only_the_queue_split():
    # the engine's stamps are from a clock that is not this process's monotonic one
    timing = ttft_split(_out(500.004, 500.005, 500.055), 60.0, 10.000, 10.060)
    assert timing == SegmentTiming(queue_ms=pytest.approx(1.0), prefill_ms=pytest.approx(59.0))


@pytest.mark.parametrize("out", [SimpleNamespace(metrics=None), _out(0.0, 10.005, 10.055), _out(10.006, 10.005, 10.055)])
def test_missing_or_disordered_stamps_give_the_whole_time_as_prefill(out):
    assert ttft_split(out, 60.0, 10.000, 10.060) == SegmentTiming(prefill_ms=60.0)
