"""Engine processes die with their parent (a SIGKILLed replica leaves no orphan engine)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

CHILD = ("import os, time; from relay_ray.engines.lifecycle import watch_parent; "
         "watch_parent(os.getppid(), poll_s=0.05); print(os.getpid(), flush=True); time.sleep(60)")
PARENT = ("import subprocess, sys, time; "
          f"p = subprocess.Popen([sys.executable, '-c', {CHILD!r}], stdout=sys.stdout); time.sleep(60)")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_watched_child_ends_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        time.sleep(0.3)
        assert not _gone(child_pid)  # alive while its parent lives
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while not _gone(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child_pid)
    finally:
        parent.kill()


def test_engines_told_to_sleep_between_polls_give_the_core_back(monkeypatch):
    from vllm.distributed.device_communicators import shm_broadcast
    from vllm.v1.executor.multiproc_executor import WorkerProc

    from relay_ray.engines import lifecycle

    condition = shm_broadcast.SpinCondition
    monkeypatch.setattr(condition, "wait", condition.wait)  # restored afterwards
    monkeypatch.setattr(WorkerProc, "worker_main", WorkerProc.__dict__["worker_main"])
    monkeypatch.setattr(lifecycle, "_ORIGINAL_WORKER", None)
    yields, polls = [], []
    monkeypatch.setattr(shm_broadcast, "sched_yield", lambda: yields.append(1))
    monkeypatch.delenv(lifecycle.POLL_SLEEP_ENV, raising=False)
    monkeypatch.delenv(lifecycle.POLL_SPIN_ENV, raising=False)
    assert not lifecycle.sleep_between_polls()  # unset: vLLM's busy loop stays
    monkeypatch.setenv(lifecycle.POLL_SLEEP_ENV, "0")
    assert not lifecycle.sleep_between_polls()
    vllm_wait = condition.wait

    class Reader:  # what SpinCondition.wait reads of its reader
        is_reader, busy_loop_s = True, 1.0
        read_cancel_socket = local_notify_socket = None
        poller = type("Poller", (), {"poll": lambda self, timeout: polls.append(timeout) or {}})()
        last_read = 0.0

    reader = Reader()

    def waits(idle_s: float, count: int = 5) -> float:
        """Seconds ``count`` waits take, ``idle_s`` after the reader's last read."""
        reader.last_read = time.monotonic() - idle_s
        started = time.perf_counter()
        for _ in range(count):
            condition.wait(reader, timeout_ms=7)
        return time.perf_counter() - started

    monkeypatch.setenv(lifecycle.POLL_SLEEP_ENV, "2000")
    assert lifecycle.sleep_between_polls() and condition.wait is not vllm_wait
    assert waits(0.1) >= 5 * 0.002 and not yields  # sleeps within the busy window
    waits(2.0, count=1)
    assert polls == [7] and not yields  # past it: vLLM's wait on its notification socket
    # with a spin window, vLLM's busy loop first, sleeps after it
    monkeypatch.setenv(lifecycle.POLL_SPIN_ENV, "50000")
    assert lifecycle.sleep_between_polls()  # applied again: wraps vLLM's wait, not its own
    assert waits(0.0) < 0.002 and len(yields) == 5
    assert waits(0.1) >= 5 * 0.002 and len(yields) == 5

    # workers the engine core starts apply it too: a spawned one runs vLLM's own main after it,
    # a forked one (the patch came along) the original kept aside
    original = WorkerProc.worker_main
    lifecycle._start_workers_sleeping()
    lifecycle._start_workers_sleeping()  # idempotent
    assert WorkerProc.worker_main is lifecycle.run_worker_sleeping_between_polls
    assert lifecycle._ORIGINAL_WORKER is original
    calls = []
    monkeypatch.setattr(lifecycle, "_ORIGINAL_WORKER", lambda *a, **k: calls.append((a, k)) or "ran")
    monkeypatch.setattr(condition, "wait", vllm_wait)
    assert lifecycle.run_worker_sleeping_between_polls(1, rank=0) == "ran" and calls == [((1,), {"rank": 0})]
    assert condition.wait is not vllm_wait
