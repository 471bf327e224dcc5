"""Each tier scales on its own demand, on real Ray Serve with real vLLM engines.

Replica counts are what Serve is running or starting (its autoscaling target); on this CPU a
new vLLM replica takes tens of seconds to become RUNNING under load, recorded separately.

Runs loadtest/autoscale_scenario.py (its own Ray instance, so it must not overlap with the
session's relay applications: it uses no session fixture, so tests/conftest.py runs it
before the session starts).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def timeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("autoscale") / "autoscale.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "loadtest" / "autoscale_scenario.py"), "--phase-s", "75", "--until-scaled",
         "--idle-timeout-s", "120", "--users", "6", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())["timeline"]


def _phase(timeline, name):
    return [p for p in timeline if p["phase"] == name]


def test_small_heavy_load_scales_the_small_tier_only(timeline):
    small_heavy = _phase(timeline, "small-heavy")
    assert max(p["small"] for p in small_heavy) >= 2
    assert {p["large"] for p in small_heavy} == {1}


def test_large_heavy_load_moves_replicas_the_other_way(timeline):
    small_peak = max(p["small"] for p in _phase(timeline, "small-heavy"))
    large_heavy = _phase(timeline, "large-heavy")
    assert max(p["large"] for p in large_heavy) >= 2
    assert large_heavy[-1]["small"] < small_peak


def test_both_tiers_return_to_their_minimum(timeline):
    last = timeline[-1]
    assert last["phase"] == "idle" and (last["large"], last["small"]) == (1, 1)
    assert (last["large_running"], last["small_running"]) == (1, 1)
