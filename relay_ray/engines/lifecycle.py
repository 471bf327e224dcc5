"""Engine processes live and die with their replica.

vLLM runs its engine core in a child process of the process that creates the ``AsyncLLM``
(the tier replica). If the replica is SIGKILLed, the child survives, keeping its memory (on a
GPU, the memory the restarted replica needs) until someone reaps it. :func:`bind_to_replica`
makes every engine core started afterwards in this process watch its parent: when the parent
is gone (the child was re-parented), the engine core terminates itself, and its own workers
follow it (vLLM's worker processes watch the engine core).
"""

from __future__ import annotations

import os
import signal
import threading
import time

PARENT_POLL_S = 0.5
NICENESS_ENV = "RELAY_RAY_ENGINE_NICENESS"  # read by engine cores at start; their workers inherit it
POLL_SLEEP_ENV = "RELAY_RAY_ENGINE_POLL_SLEEP_US"  # read by engine cores and their workers at start
POLL_SPIN_ENV = "RELAY_RAY_ENGINE_POLL_SPIN_US"  # likewise: how long they still busy-loop after a message
TERM_GRACE_S = 5.0  # SIGTERM lets vLLM shut down cleanly; SIGKILL after this long


def bind_to_replica() -> None:
    """Start vLLM engine cores of this process through :func:`run_engine_core_bound_to_parent`."""
    from vllm.v1.engine import core

    if getattr(core.EngineCoreProc.run_engine_core, "__relay_bound__", False):
        return
    global _ORIGINAL
    _ORIGINAL = core.EngineCoreProc.run_engine_core
    # spawn pickles the process target by name: the child imports this module and calls it.
    core.EngineCoreProc.run_engine_core = staticmethod(run_engine_core_bound_to_parent)


_ORIGINAL = None


def run_engine_core_bound_to_parent(*args, **kwargs):
    """vLLM's engine core main, plus a watchdog that ends it when its parent dies."""
    from vllm.v1.engine.core import EngineCoreProc

    watch_parent(os.getppid())
    niceness = _env_int(NICENESS_ENV)
    if niceness > 0:  # engines yield the CPU to the control plane (proxy, controllers)
        os.nice(niceness)
    if sleep_between_polls():
        _start_workers_sleeping()
    return _vllm_own(EngineCoreProc.run_engine_core, _ORIGINAL)(*args, **kwargs)


run_engine_core_bound_to_parent.__relay_bound__ = True


def _env_int(name: str) -> int:
    """An integer the replica set for its engine processes (vllm_tier.apply_cpu_env); 0 if unset."""
    return int(os.environ.get(name, "0") or 0)


def _vllm_own(current, original):
    """The vLLM entry point to run in a child process: in a spawned child the class attribute is
    vLLM's own (the patch lives in the parent); a forked child inherited the patch, so the
    original saved before patching is the one."""
    return original if getattr(current, "__relay_bound__", False) else current


def watch_parent(parent_pid: int, poll_s: float = PARENT_POLL_S) -> threading.Thread:
    """A daemon thread that terminates this process once ``parent_pid`` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(TERM_GRACE_S)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="relay-parent-watch", daemon=True)
    thread.start()
    return thread


def sleep_between_polls() -> bool:
    """In an engine core or worker process: if ``POLL_SLEEP_ENV`` is set, wait for the other
    process with short sleeps instead of vLLM's busy loop; True if it did.

    vLLM's engine core and its worker process (on CPU always two processes) hand each step over
    through a shared-memory queue whose reader spins on ``sched_yield`` for a second after each
    read. While a tier decodes, its engine core spins a whole core away waiting for the worker,
    and after every segment both spin on for a second: on a machine where the tiers and the
    service share a few cores, the spinning takes the CPU the other tier's engine and the
    service need. A sleep of some microseconds between polls keeps vLLM's protocol (the reader
    still polls the buffer within its busy window, so no notification can be missed) and gives
    the core back. With ``POLL_SPIN_ENV`` set too, the reader keeps vLLM's busy loop that long
    after each message and sleeps only after that: steps that follow each other closely (a busy
    tier) hand over at once, and a tier whose segment has ended gives its core back.
    docs/benchmarks.md, "Item 3: where the CPU goes between the tiers".
    """
    sleep_us = _env_int(POLL_SLEEP_ENV)
    if sleep_us <= 0:
        return False
    from vllm.distributed.device_communicators.shm_broadcast import SpinCondition

    pause_s = sleep_us / 1e6
    spin_s = _env_int(POLL_SPIN_ENV) / 1e6
    vllm_wait = getattr(SpinCondition.wait, "__relay_vllm_wait__", SpinCondition.wait)

    def wait(self, timeout_ms: int | None = None) -> None:
        # vLLM's wait yields while the last read is under busy_loop_s old, and otherwise
        # blocks on its notification socket.
        idle_s = time.monotonic() - self.last_read
        if spin_s < idle_s <= self.busy_loop_s:
            time.sleep(pause_s)
        else:
            vllm_wait(self, timeout_ms)

    wait.__relay_vllm_wait__ = vllm_wait
    SpinCondition.wait = wait
    return True


def _start_workers_sleeping() -> None:
    """Workers this engine core spawns apply :func:`sleep_between_polls` too (forked ones inherit
    the patched module)."""
    from vllm.v1.executor.multiproc_executor import WorkerProc

    global _ORIGINAL_WORKER
    if not getattr(WorkerProc.worker_main, "__relay_bound__", False):
        _ORIGINAL_WORKER = WorkerProc.worker_main
        WorkerProc.worker_main = staticmethod(run_worker_sleeping_between_polls)


_ORIGINAL_WORKER = None


def run_worker_sleeping_between_polls(*args, **kwargs):
    """vLLM's worker main, after :func:`sleep_between_polls`."""
    from vllm.v1.executor.multiproc_executor import WorkerProc

    sleep_between_polls()
    return _vllm_own(WorkerProc.worker_main, _ORIGINAL_WORKER)(*args, **kwargs)


run_worker_sleeping_between_polls.__relay_bound__ = True
