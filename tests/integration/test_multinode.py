"""A real multi-node Ray cluster: placement by node type, cross-node direct transport, and what
a client sees when a worker node is removed under load.

The cluster (a head and three worker raylets on this machine, logical GPUs and marker
resources standing in for cluster/ray-cluster-gpu.yaml's node types) runs in its own process:
tests/integration/multinode_scenario.py (about 1.5 minutes; engines start once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TIER_NODE_TYPES = {"LargeTier": "large-gpu", "SmallTier": "small-gpu", "RelayController": "head"}
# Segment migration (docs/reliability.md): a segment whose replica dies is re-run on a healthy
# replica of the tier, so every in-flight request finishes. False would only record what the
# client saw (as before migration existed).
FAILOVER_MIGRATES_SEGMENTS = True


@pytest.fixture(scope="module")
def facts(tmp_path_factory) -> dict:
    if not (ROOT / "models" / "demo-small" / "config.json").exists():
        pytest.fail("models are missing: run `make models` (make test does)")
    out = tmp_path_factory.mktemp("multinode") / "facts.json"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "integration" / "multinode_scenario.py"),
                           "--out", str(out)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=420)
    if not out.exists() or proc.returncode != 0:
        pytest.fail(f"scenario failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    facts = json.loads(out.read_text())
    print(f"\nmulti-node scenario timings (s): {facts.get('timings_s')}")
    return facts


def test_each_tier_lands_only_on_its_node_type(facts):
    types = facts["nodes"]
    assert sorted(types.values()) == ["head", "large-gpu", "small-gpu", "small-gpu"]
    replicas = facts["replicas"]
    for deployment, node_type in TIER_NODE_TYPES.items():
        assert replicas[deployment], f"{deployment} has no replica"
        assert set(replicas[deployment].values()) == {node_type}, (deployment, replicas[deployment])
    assert len(replicas["SmallTier"]) == 2  # one per small node (each offers relay_small: 1)


def test_segments_cross_nodes_and_later_ones_go_direct(facts):
    requests = facts["requests"]
    assert requests and all(r["ok"] for r in requests), requests
    for r in requests:
        segments = r["segments"]
        assert len(segments) == 8 and {s["tier"] for s in segments} == {"large", "small"}
        for seg in segments:  # the controller is on the head; every segment ran on another node
            assert seg["node_type"] == ("large-gpu" if seg["tier"] == "large" else "small-gpu"), seg
        for tier in ("large", "small"):  # affinity: one replica per tier per request
            assert len({s["replica"] for s in segments if s["tier"] == tier}) == 1
    spans = facts["spans"]
    assert spans["traces"] == len(requests)
    for tier in ("large", "small"):
        ran, through_serve = spans[tier]["segments"], spans[tier]["handle_calls"]
        assert ran == 4 * len(requests), spans
        # Only each request's first segment on a tier goes through a Serve handle; the other
        # three went straight to the replica's SegmentService on its node.
        assert through_serve == len(requests), spans


def test_removing_a_small_node_under_load(facts):
    removal = facts["removal"]
    outcomes = removal["outcomes"]
    assert removal["in_flight_on_removed"] >= 1  # the removed node was serving requests
    assert all("ok" in o for o in outcomes)  # every client got an answer or an error, none hung
    for o in outcomes:
        if o["ok"]:
            assert o["tokens"] == removal["max_new_tokens"] and o["finish"] == "FINISH_REASON_BUDGET", o
        else:
            assert o["error"].startswith("UNAVAILABLE"), o  # a clear retryable status, not INTERNAL
    # New requests after the removal are served by the surviving small replica.
    assert all(r["ok"] for r in removal["after"]), removal["after"]
    survivors = {s["replica"] for r in removal["after"] for s in r["segments"] if s["tier"] == "small"}
    assert removal["removed_replica"] not in survivors
    failed = [o for o in outcomes if not o["ok"]]
    migrations = sum(o.get("migrations", 0) for o in outcomes if o["ok"])
    summary = (f"node removal under load: {len(outcomes) - len(failed)}/{len(outcomes)} in-flight requests "
               f"finished ({removal['in_flight_on_removed']} were on the removed replica; {migrations} segment "
               "migrations); failures: "
               + ("; ".join(f"{o['error']} after {len(o['segments'])} segments" for o in failed) or "none"))
    print("\n" + summary)
    if FAILOVER_MIGRATES_SEGMENTS:
        # Every in-flight request finished. Whether one of them had a segment running on the
        # removed node at that instant is timing (a clean run saw 0 with 2 requests on it), so the
        # migration count is reported, not asserted: test_faults kills replicas mid-segment.
        assert not failed, summary
    elif failed:
        warnings.warn(UserWarning(summary + " (recorded: strict once segment migration lands)"))
