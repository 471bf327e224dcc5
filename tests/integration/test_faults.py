"""Tier replicas SIGKILLed under streaming load: no request fails, every answer is the
fault-free answer, no delta is lost or repeated, migrations are counted, no engine is orphaned.

Runs on the session's ``faults`` application (2 replicas per tier, 2 controllers, both tiers
serving the same small model). Kills only replica processes this session started, by the
pids Ray reports for them; waits until every replica is back before it ends.
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
import urllib.request

import pytest

from relay_ray.client import RelayClient, build_request
from relay_ray.serve.replicas import engines_by_parent, kill_decoding_replica, orphaned_engine_processes, replica_pids, wait_for_replicas

pytestmark = pytest.mark.integration
APP = "same"
TIERS = ("LargeTier", "SmallTier")
NEW_TOKENS = 64
PROMPTS = [f"So we add {i} and {5 * i + 2}; the ledger says {6 * i + 2}. Next we check" for i in range(6)]
MIX = [("fixed-ratio", {"large_tokens": 6, "small_tokens": 10}), ("rstitch", {"tau": 0.3})]
WORK = [(p, policy, params) for p in PROMPTS for policy, params in MIX]
NUM_CLIENTS, NUM_KILLS = 4, 6


def _stream(client: RelayClient, prompt: str, policy: str, params: dict):
    events = list(client.generate_stream(build_request(prompt, policy, params, max_new_tokens=NEW_TOKENS)))
    final = events[-1].final
    deltas = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
    return final, deltas


@pytest.fixture(scope="module")
def references(relay_server):
    """Every (prompt, policy) answered once before any fault."""
    wait_for_replicas(APP, "LargeTier", 2)
    wait_for_replicas(APP, "SmallTier", 2)
    with relay_server.client(APP) as client:
        return {(p, policy): _stream(client, p, policy, params)[0].text for p, policy, params in WORK}


def _migrations_metric(url: str) -> float:
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    total = 0.0
    for line in body.splitlines():
        m = re.match(r'^ray_relay_migrations_total\{(.*)\} ([0-9.e+-]+)$', line)
        if m and f'application="{APP}"' in m.group(1).split(","):
            total += float(m.group(2))
    return total


def test_killed_tier_replicas_lose_no_request(relay_server, references):
    rng = random.Random(11)
    stop = threading.Event()
    outcomes: list[tuple] = []
    errors: list[str] = []

    def client_loop(k: int) -> None:
        with relay_server.client(APP) as client:
            for i in range(60):  # bounded; normally ended by `stop`
                if stop.is_set():
                    return
                prompt, policy, params = WORK[(k * 7 + i) % len(WORK)]
                try:
                    final, deltas = _stream(client, prompt, policy, params)
                    outcomes.append((prompt, policy, final.text, deltas, final.stats.num_migrations))
                except Exception as exc:  # any failure is a test failure, recorded with its status
                    errors.append(f"{policy}: {type(exc).__name__}: {getattr(exc, 'code', lambda: '')()}")

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(NUM_CLIENTS)]
    for t in threads:
        t.start()
    killed = []
    try:
        for n in range(NUM_KILLS):
            time.sleep(rng.uniform(2.0, 5.0))
            tier = TIERS[n % 2]
            pids = wait_for_replicas(APP, tier, 2)  # the previous kill of this tier has recovered
            # one decoding a segment (it kills itself, by its own pid), else any, by its pid
            victim = kill_decoding_replica(APP, tier)
            if victim is None:
                victim = rng.choice(pids)
                os.kill(victim, signal.SIGKILL)  # a replica this session started
            killed.append((tier, victim))
        time.sleep(3.0)  # requests in flight at the last kill finish
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
    assert len(killed) == NUM_KILLS
    assert errors == []
    assert len(outcomes) >= NUM_CLIENTS * 2
    for prompt, policy, text, deltas, _ in outcomes:
        assert text == references[(prompt, policy)], (prompt, policy)
        assert deltas == text  # nothing lost, nothing delivered twice
    caused = sum(o[4] for o in outcomes)
    assert caused > 0  # the kills hit requests in flight
    deadline = time.monotonic() + 60
    while _migrations_metric(relay_server.metrics_url) != caused and time.monotonic() < deadline:
        time.sleep(2)
    assert _migrations_metric(relay_server.metrics_url) == caused
    # Every replica is back, each with exactly one engine; no engine outlived its replica.
    live = {tier: wait_for_replicas(APP, tier, 2) for tier in TIERS}
    assert all(len(pids) == 2 for pids in live.values()), live
    deadline = time.monotonic() + 30
    while True:
        engines = engines_by_parent()
        replicas = {pid for pids in live.values() for pid in pids}
        ok = all(engines.get(pid) == 1 for pid in replicas) and set(engines) <= set(
            replica_pids_everywhere()) and not orphaned_engine_processes()
        if ok or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert ok, (engines, live)


def replica_pids_everywhere() -> set[int]:
    apps = ("pair", "same", "edge")
    return {pid for app in apps for tier in TIERS for pid in replica_pids(app, tier)}


def test_killed_controller_replicas_lose_no_request(relay_server, references):
    """RelayClient resumes a broken stream on the other controller replica."""
    rng = random.Random(12)
    stop = threading.Event()
    outcomes, errors, resumes = [], [], []

    def client_loop(k: int) -> None:
        with relay_server.client(APP) as client:
            for i in range(60):
                if stop.is_set():
                    break
                prompt, policy, params = WORK[(k * 5 + i) % len(WORK)]
                try:
                    final, deltas = _stream(client, prompt, policy, params)
                    outcomes.append((prompt, policy, final.text, deltas))
                except Exception as exc:
                    errors.append(f"{policy}: {getattr(exc, 'code', lambda: '')()} {getattr(exc, 'details', str)()}")
            resumes.append(client.num_resumes)

    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(NUM_CLIENTS)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            time.sleep(rng.uniform(2.0, 4.0))
            victim = rng.choice(wait_for_replicas(APP, "RelayController", 2))
            os.kill(victim, signal.SIGKILL)  # a replica this session started, by its pid
        time.sleep(3.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
    assert errors == []
    assert sum(resumes) > 0  # streams really broke and were resumed
    for prompt, policy, text, deltas in outcomes:
        assert text == references[(prompt, policy)] and deltas == text, (prompt, policy)
    assert len(wait_for_replicas(APP, "RelayController", 2)) == 2
