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
    run = EngineCoreProc.run_engine_core  # in the child: vLLM's own (the patch lives in the parent)
    if getattr(run, "__relay_bound__", False):  # forked rather than spawned: the patch came along
        run = _ORIGINAL
    return run(*args, **kwargs)


run_engine_core_bound_to_parent.__relay_bound__ = True


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
