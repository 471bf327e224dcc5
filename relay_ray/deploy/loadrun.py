"""Locust step-load runs against a served relay, and their per-request rows cut into steps.

Figures come from the real request rows of ``loadtest/locustfile.py --requests-csv`` (one
row per request), never from Locust's metric rows. Within a step of ``users`` concurrent
users held for ``seconds``:

- throughput = requests (and generated tokens) *completed* in the step's window / window
  length, the window being the step minus its first ``warmup_s``;
- latency percentiles = requests that *started* in the window and finished within the step
  (they ran entirely under this step's load).
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RequestRow:
    start_s: float
    end_s: float
    users: int
    policy: str
    ok: bool
    latency_s: float
    tokens: int = 0
    large_generated: int = 0
    small_generated: int = 0
    switches: int = 0
    large_prefill_tokens: int = 0
    small_prefill_tokens: int = 0
    error: str = ""

    @property
    def generated(self) -> int:
        return self.large_generated + self.small_generated


def read_rows(path: str | Path) -> list[RequestRow]:
    def num(row: dict, key: str) -> int:
        value = row.get(key) or "0"
        return int(float(value))

    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append(RequestRow(
                float(row["start_s"]), float(row["end_s"]), int(row["users"]), row["policy"], row["ok"] == "True",
                float(row["latency_ms"]) / 1000, num(row, "tokens"), num(row, "large_generated"),
                num(row, "small_generated"), num(row, "switches"), num(row, "large_prefill_tokens"),
                num(row, "small_prefill_tokens"), row.get("error", "")))
    return rows


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True)
class StepStats:
    users: int
    window_s: float
    completed: int  # requests completed in the window
    failed: int
    requests_per_s: float
    tokens_per_s: float  # generated tokens, both tiers
    tier_tokens_per_s: dict[str, float]
    latency_requests: int  # requests behind the percentiles
    p50_s: float
    p95_s: float
    mean_s: float
    s_per_token_p95: float
    s_per_token_mean: float
    policy_p95_s: dict[str, float]


def step_stats(rows: Sequence[RequestRow], steps: Sequence[tuple[int, float]], warmup_s: float) -> list[StepStats]:
    """Cut a step-load run's rows into its steps (see the module docstring)."""
    out = []
    for users, seconds in steps:
        mine = [r for r in rows if r.users == users]
        if not mine:
            continue
        begin = min(r.start_s for r in mine)
        end = begin + seconds
        lo = begin + min(warmup_s, seconds / 2)
        window = end - lo
        done = [r for r in rows if lo <= r.end_s < end]
        ok = [r for r in done if r.ok]
        timed = [r for r in rows if r.ok and lo <= r.start_s and r.end_s <= end]
        per_token = [r.latency_s / r.generated for r in timed if r.generated]
        policies = sorted({r.policy for r in timed})
        out.append(StepStats(
            users=users, window_s=window, completed=len(ok), failed=len(done) - len(ok),
            requests_per_s=len(ok) / window,
            tokens_per_s=sum(r.generated for r in ok) / window,
            tier_tokens_per_s={"large": sum(r.large_generated for r in ok) / window,
                               "small": sum(r.small_generated for r in ok) / window},
            latency_requests=len(timed),
            p50_s=percentile([r.latency_s for r in timed], 0.5),
            p95_s=percentile([r.latency_s for r in timed], 0.95),
            mean_s=sum(r.latency_s for r in timed) / len(timed) if timed else math.nan,
            s_per_token_p95=percentile(per_token, 0.95),
            s_per_token_mean=sum(per_token) / len(per_token) if per_token else math.nan,
            policy_p95_s={p: percentile([r.latency_s for r in timed if r.policy == p], 0.95) for p in policies},
        ))
    return out


def format_steps(steps: Sequence[tuple[int, float]]) -> str:
    return ",".join(f"{u}:{s:g}" for u, s in steps)


def run_step_load(address: str, mix: str, steps: Sequence[tuple[int, float]], out_csv: Path,
                  max_new_tokens: int, policy_params: str = "{}", app: str = "", ignore_eos: bool = True,
                  log: Path | None = None) -> list[RequestRow]:
    """Run ``loadtest/stepload.py`` headless against ``address``; returns the request rows."""
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "stepload.py"), "--headless",
           "--host", address, "--steps", format_steps(steps), "--policy-mix", mix, "--policy-params", policy_params,
           "--max-new-tokens", str(max_new_tokens), "--requests-csv", str(out_csv), "--only-summary",
           "--stop-timeout", "600", "--loglevel", "WARNING"]
    if ignore_eos:
        cmd.append("--ignore-eos")
    if app:
        cmd += ["--app", app]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(log or os.devnull, "a") as fh:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, check=True)
    return read_rows(out_csv)
