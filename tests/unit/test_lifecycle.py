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
