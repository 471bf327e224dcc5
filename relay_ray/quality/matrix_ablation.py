"""The prefill-ahead ablation's table (issue 10 item 3): each real policy with prefill-ahead off,
on, and on with warm-ups gated by the policy's recent segment lengths ("gated"), latency passes
of one run, against that run's large-only decode step.

A handoff into the large tier costs the large tier's time to its first new token: a fixed
engine-step cost plus the prefill of every token it has not cached (the other tier's tokens
since its last segment, and the partial last KV block, which vLLM's prefix cache never keeps).
Prefill-ahead warms the large tier's cache with whole blocks while the small tier writes, so
the column to read is "uncached at handoff" next to the handoff's cost.
"""

from __future__ import annotations

from relay_ray.bench.console import table
from relay_ray.quality.matrix import Group
from relay_ray.quality.matrix_report import Row, fmt_num

COLUMNS = ("policy", "prefill-ahead", "c=1 ms", "c=1 vs off", "c=1 speedup (this run)", "efficiency",
           "into-large per request", "uncached at handoff p50", "into-large p50 ms (steps)",
           "of which the engine's step, p50 ms")
BASE_LABEL = "large-only (ablation)"
ARM_COLUMN = {"prefill-ahead off": "off", "prefill-ahead": "on", "gated prefill-ahead": "gated",
              "one-token first chunk": "off, one-token first chunk",
              "gated prefill-ahead + first chunk": "gated, one-token first chunk",
              "first chunk, rule from logprobs": "off, one-token first chunk, small-tier rule from logprobs",
              "gated prefill-ahead + first chunk, large engine yields": "gated, one-token first chunk, large engine niceness 10",
              "engines sleep between polls": "off, one-token first chunk, engines sleep 30 µs between polls",
              "engines spin 10 ms, then sleep between polls": "off, one-token first chunk, engines busy-loop 10 ms "
              "after each message, then sleep 30 µs between polls"}


def ablation_table(all_rows: list[Row]) -> str:
    """One line per arm; empty when the run has no ablation rows."""
    arms = [r for r in all_rows if r.entry.group is Group.HANDOFF and r.latency is not None]
    by = {r.entry.label: r for r in arms}
    base = by.get(BASE_LABEL)
    body = []
    for r in arms:
        if r.entry.label == BASE_LABEL:
            continue
        policy, _, arm = r.entry.label.partition(", ")
        off = by.get(f"{policy}, prefill-ahead off")
        ms = r.latency.mean_client_ms
        vs_off = off.latency.mean_client_ms / ms if off is not None and off is not r else None
        speedup = base.latency.mean_client_ms / ms if base is not None else None
        steps = f" ({r.into_large_p50_steps:.2f})" if r.into_large_p50_steps is not None else ""
        body.append([policy, ARM_COLUMN.get(arm, arm), fmt_num(ms), fmt_num(vs_off, "{:.2f}x"),
                     fmt_num(speedup, "{:.2f}x"), fmt_num(r.efficiency, "{:.2f}"), fmt_num(r.into_large_per_request, "{:.1f}"),
                     fmt_num(r.into_large_uncached_p50), fmt_num(r.into_large_p50_ms) + steps,
                     fmt_num(r.into_large_engine_step_p50_ms)])
    if not body:
        return ""
    note = (f"\nlarge-only in this run: {fmt_num(base.latency.mean_client_ms)} ms at c=1" if base is not None else "")
    return table(COLUMNS, body) + note
