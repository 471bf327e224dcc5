"""The bench pipeline on the served demo pair: exact token counts (EOS ignored), fresh prompts
for every run, figures that add up, the ideal a lower bound at concurrency 1, and switches into
the large tier served from its prefix cache."""

from __future__ import annotations

import pytest

from relay_ray.bench import report
from relay_ray.bench.runner import run_scenario
from relay_ray.bench.scenarios import LARGE_ONLY, SMALL_ONLY, fixed_ratio

pytestmark = pytest.mark.integration
NEW_TOKENS = 64


def test_bench_figures_on_the_served_pair(relay_server):
    with relay_server.client("pair") as client:
        runs = {s.label: run_scenario(client, s, concurrency=1, num_requests=3, max_new_tokens=NEW_TOKENS,
                                      prompt_offset=10 * k)
                for k, s in enumerate((LARGE_ONLY, SMALL_ONLY, fixed_ratio(0.25, 32)))}
    for run in runs.values():
        assert all(s.num_tokens == NEW_TOKENS for s in run.samples)  # EOS ignored: exact lengths
    large = report.TierCost.of(runs["large-only"], large=True)
    small = report.TierCost.of(runs["small-only"], large=False)
    assert large.ms_per_token > 0 and small.ms_per_token > 0
    relay = runs["relay 25% 8/24"]
    row = report.summarize("demo", relay, large, small, runs["large-only"])
    assert row.large_share == 0.25 and row.handoffs == 3 * 3  # segments 8/24/8/24: 3 switches per request
    # Every run prefilled its own prompts: the relay's first segments found no more of their
    # prompt cached than large-only's did (only the prefix all bench prompts share). CI once
    # saw the relay beat its ideal by 5% when the runs shared prompts: its prefill was cached.
    first_cached = {label: max(s.first_num_cached_tokens for s in run.samples) for label, run in runs.items()}
    assert first_cached["relay 25% 8/24"] <= first_cached["large-only"], first_cached
    # The ideal is a lower bound at concurrency 1 (report.TierCost: the tiers' fastest requests):
    # single-tier requests never beat it, by construction. For relay requests it is a timing
    # claim (three requests' noise can beat it), measured in docs/benchmarks.md, not asserted here.
    for run in (runs["large-only"], runs["small-only"]):
        for sample in run.samples:
            assert report.ideal_ms(sample, large, small) <= sample.latency_ms + 1e-6
    assert row.efficiency > 0.0
    assert row.tokens_per_s == pytest.approx(3 * NEW_TOKENS / relay.wall_s)
    assert 0.5 < row.cached_share <= 1.0
    into_large = [h for s in relay.samples for h in s.handoffs if h.into_large]
    # Each switch into the large tier finds in the prefix cache every whole block the large
    # tier computed before (prompt and its 8 tokens), so it prefills at most the small tier's
    # 24 tokens plus one partial block. Prefill-ahead lowers that further when its warm-up wins
    # the race with the switch: a timing claim (a clean-clone run saw a mean of 33 left, the
    # test once asserted <= 32), measured in docs/benchmarks.md ("cached at handoffs").
    uncached = [h.num_prompt_tokens - h.num_cached_tokens for h in into_large]
    assert len(uncached) == 3 and all(0 <= u <= 24 + 32 for u in uncached), uncached
