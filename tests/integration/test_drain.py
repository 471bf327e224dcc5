"""Scaling the small tier 2 -> 1 -> 3 -> 1 -> 2 under streaming load loses nothing: replicas
that Serve stops finish or hand back their direct segments, the rest are migrated.

Runs on the ``same`` application (both tiers serve one model, so every answer must equal the
model alone). It resizes the small tier through Serve's external scaling API (the controller
call behind ``POST /api/v1/applications/{app}/deployments/{name}/scale``: what an external
autoscaler does; the conftest enables it for this application) and restores 2 replicas.
"""

from __future__ import annotations

import threading
import time

import pytest

from relay_ray.client import build_request
from relay_ray.serve.replicas import replica_pids

pytestmark = pytest.mark.integration
APP = "same"
PROMPTS = [f"So we add {i} and {3 * i + 1}. Then we add the result to {i}, and we check" for i in range(8)]
MIX = [("fixed-ratio", {"large_tokens": 4, "small_tokens": 12}), ("rstitch", {"tau": 0.2}),
       ("small-only", {})]


def _scale(small_replicas: int) -> None:
    import ray
    from ray.serve._private.common import DeploymentID
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    ray.get(controller.update_deployment_replicas.remote(DeploymentID(name="SmallTier", app_name=APP),
                                                         small_replicas), timeout=30)


def _wait_for_exactly(count: int, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(replica_pids(APP, "SmallTier")) != count and time.monotonic() < deadline:
        time.sleep(1.0)
    assert len(replica_pids(APP, "SmallTier")) == count


def test_scaling_the_small_tier_under_load_loses_nothing(relay_server):
    with relay_server.client(APP) as client:
        alone = {p: client.generate(build_request(p, "large-only", max_new_tokens=64)).text for p in PROMPTS}
    stop = threading.Event()
    outcomes, errors = [], []

    def client_loop(k: int) -> None:
        with relay_server.client(APP) as client:
            for i in range(200):  # bounded; normally ended by `stop`
                if stop.is_set():
                    return
                prompt = PROMPTS[(k + i) % len(PROMPTS)]
                policy, params = MIX[(k + i) % len(MIX)]
                try:
                    events = list(client.generate_stream(build_request(prompt, policy, params, max_new_tokens=64)))
                    deltas = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
                    outcomes.append((prompt, events[-1].final.text, deltas))
                except Exception as exc:
                    errors.append(f"{policy}: {type(exc).__name__} {getattr(exc, 'code', lambda: '')()}")

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        for replicas in (1, 3, 1):
            time.sleep(4.0)
            _scale(replicas)
            _wait_for_exactly(replicas)
        time.sleep(4.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
        _scale(2)
        _wait_for_exactly(2)
    assert errors == []
    assert len(outcomes) >= 8
    for prompt, text, deltas in outcomes:
        assert text == alone[prompt] and deltas == text
