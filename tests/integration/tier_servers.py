"""Standalone tier servers (``relay-ray tier-server``) for the gRPC-transport tests."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from relay_ray.types import Tier


def start_tier(model: Path, tier: str, bind: str) -> tuple[subprocess.Popen, str]:
    """Start a tier server for ``model`` on core ``bind``; return it and its host:port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay_ray.cli", "tier-server", "--model", str(model), "--tier", tier,
         "--port", "0", "--dtype", "float32", "--max-model-len", "1024", "--kv-cache-space-gib", "1",
         "--cpu-threads-bind", bind],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    for line in proc.stdout:
        match = re.search(r"listening on (\S+)", line)
        if match:
            return proc, match.group(1)
    raise RuntimeError(f"{model.name} {tier} tier server exited with {proc.wait()}")


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
    """A large tier server on core 0 and a small one on core 1: their addresses by tier,
    both stopped on exit (also when the second one fails to start)."""
    procs = []
    try:
        large, large_addr = start_tier(large_model, "large", "0")
        procs.append(large)
        small, small_addr = start_tier(small_model, "small", "1")
        procs.append(small)
        yield {Tier.LARGE: large_addr, Tier.SMALL: small_addr}
    finally:
        for proc in procs:
            stop_tier(proc)
