"""Locust's statistics count real requests only; the relay's own figures (switches, time to
first text, tokens and prefill per tier) go one row per request to --requests-csv.

Runs headless Locust (a subprocess, a few seconds) against an in-process fake RelayService.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from relay_ray.v1 import common_pb2
from relay_ray.v1 import relay_pb2 as rpb
from relay_ray.v1 import relay_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


class FakeRelay(relay_pb2_grpc.RelayServiceServicer):
    """Every request: 3 segments (large, small, large), 12 tokens, 2 switches."""

    def GenerateStream(self, request, context):
        yield rpb.GenerateStreamResponse(request_id="r", delta=rpb.TextDelta(text="so", tier=common_pb2.TIER_LARGE))
        segments = [rpb.SegmentInfo(index=i, tier=t, num_tokens=4, num_prompt_tokens=40 + 4 * i,
                                    num_cached_tokens=32 if i else 0)
                    for i, t in enumerate((common_pb2.TIER_LARGE, common_pb2.TIER_SMALL, common_pb2.TIER_LARGE))]
        stats = rpb.RelayStats(large_tokens=8, small_tokens=4, large_generated_tokens=8, small_generated_tokens=4,
                               num_switches=2, num_segments=3)
        yield rpb.GenerateStreamResponse(request_id="r", final=rpb.GenerateResponse(
            request_id="r", text="so on", token_ids=list(range(12)), segments=segments, stats=stats))


@pytest.fixture
def fake_relay():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    relay_pb2_grpc.add_RelayServiceServicer_to_server(FakeRelay(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def _locust(address: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "locust", *extra, "--headless", "--host", address, "--policy-mix",
         "small-only:1,fixed-ratio:1", "--requests-csv", str(out / "requests.csv"), "--json",
         "--stop-timeout", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def _final_stats(stdout: str) -> list[dict]:
    """Locust's final statistics (``--json`` prints them last, after our summary)."""
    import json

    return json.loads(stdout[stdout.index("\n[") + 1:])


def test_summary_counts_real_requests_only(fake_relay, tmp_path):
    proc = _locust(fake_relay, tmp_path, "-f", "loadtest/locustfile.py", "-u", "2", "-r", "2", "-t", "3s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = _final_stats(proc.stdout)
    with open(tmp_path / "requests.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {e["name"] for e in stats} <= {"small-only", "fixed-ratio"}  # no switches/ttft_ms rows
    assert {e["method"] for e in stats} == {"grpc"}
    assert sum(e["num_requests"] for e in stats) == len(rows) > 0
    row = rows[0]
    assert row["ok"] == "True" and row["switches"] == "2" and row["large_tokens"] == "8"
    assert row["large_prefill_tokens"] == str(40 + 48 - 32) and row["small_prefill_tokens"] == str(44 - 32)
    assert float(row["ttft_ms"]) <= float(row["latency_ms"])
    assert "relay figures over" in proc.stdout and "switches 2.00" in proc.stdout


def test_step_load_holds_each_user_count(fake_relay, tmp_path):
    proc = _locust(fake_relay, tmp_path, "-f", "loadtest/stepload.py", "--steps", "1:2,3:2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "requests.csv") as fh:
        users = {int(row["users"]) for row in csv.DictReader(fh)}
    assert users == {1, 3}
