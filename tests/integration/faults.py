"""Helpers of the fault tests: find the processes of the session's Serve replicas (by asking
Ray for their pids; nothing is matched by name), kill them by pid, count engine processes."""

from __future__ import annotations

import os
import signal
import time

import psutil

ENGINE_TITLE = "EngineCore"  # vLLM's engine core process title (VLLM::EngineCore)


def _pid(self) -> int:  # runs inside the replica actor
    return os.getpid()


def replica_pids(app: str, deployment: str) -> list[int]:
    """Pids of the live replicas of ``deployment`` in ``app``."""
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    pids = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] != "serve" or not entry["name"].startswith(prefix):
            continue
        try:
            actor = ray.get_actor(entry["name"], namespace="serve")
            pids.append(ray.get(actor.__ray_call__.remote(_pid), timeout=10))
        except Exception:  # dead, restarting or not yet started
            continue
    return sorted(pids)


def wait_for_replicas(app: str, deployment: str, count: int, timeout_s: float = 180.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        pids = replica_pids(app, deployment)
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(1.0)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def engine_processes() -> list[psutil.Process]:
    """vLLM engine core processes of this test session (they inherit its session marker)."""
    from relay_ray.serve.local import SESSION_ENV

    session = os.environ.get(SESSION_ENV)
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or []) or proc.info["name"] or ""
            if ENGINE_TITLE in title and proc.environ().get(SESSION_ENV) == session:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def engines_by_parent() -> dict[int, int]:
    """Engine core processes counted by parent pid."""
    counts: dict[int, int] = {}
    for proc in engine_processes():
        try:
            counts[proc.ppid()] = counts.get(proc.ppid(), 0) + 1
        except psutil.NoSuchProcess:
            continue
    return counts
