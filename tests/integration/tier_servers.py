"""Standalone tier servers (``relay-ray tier-server``) for the gRPC-transport tests."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from relay_ray.types import Tier


def launch_tier(model: Path, tier: str, bind: str) -> subprocess.Popen:
    """Start a tier server for ``model`` on core ``bind`` (see :func:`wait_listening`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "relay_ray.cli", "tier-server", "--model", str(model), "--tier", tier,
         "--port", "0", "--dtype", "float32", "--max-model-len", "1024", "--kv-cache-space-gib", "1",
         "--cpu-threads-bind", bind],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )


def wait_listening(proc: subprocess.Popen, what: str) -> str:
    """The host:port a launched tier server listens on, once it says so."""
    for line in proc.stdout:
        match = re.search(r"listening on (\S+)", line)
        if match:
            return match.group(1)
    raise RuntimeError(f"{what} tier server exited with {proc.wait()}")


def stop_tier(proc: subprocess.Popen) -> None:
    """Stop a tier server and its engine process (SIGTERM lets vLLM shut its engine down)."""
    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    proc.terminate()
    try:
        proc.wait(timeout=30)
    finally:
        for child in children:
            if child.is_running():
                child.kill()


@contextmanager
def tier_pair(large_model: Path, small_model: Path) -> Iterator[dict[Tier, str]]:
    """A large tier server on core 0 and a small one on core 1, started side by side: their
    addresses by tier, both stopped on exit (also when one of them fails to start)."""
    procs = {Tier.LARGE: launch_tier(large_model, "large", "0"), Tier.SMALL: launch_tier(small_model, "small", "1")}
    try:
        yield {tier: wait_listening(proc, f"{tier.value} ({proc.args[5]})") for tier, proc in procs.items()}
    finally:
        for proc in procs.values():
            stop_tier(proc)
