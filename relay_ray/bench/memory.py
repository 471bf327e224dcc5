"""Resident memory of the relay's processes: each tier (Serve replica + its vLLM engine
processes) and the controller.

``current`` is each process's resident set (psutil), summed over the component's processes;
``peak`` is the sum of their high-water marks (VmHWM). psutil reports no high-water mark,
so that one figure is read from ``/proc/<pid>/status`` (Linux; 0 elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from relay_ray.bench import console
from relay_ray.serve.builder import CONTROLLER_DEPLOYMENT_NAME, TIER_DEPLOYMENT_NAMES
from relay_ray.types import Tier

COMPONENTS = {
    "large tier": TIER_DEPLOYMENT_NAMES[Tier.LARGE],
    "small tier": TIER_DEPLOYMENT_NAMES[Tier.SMALL],
    "controller": CONTROLLER_DEPLOYMENT_NAME,
}


@dataclass(frozen=True)
class ComponentMemory:
    component: str
    num_processes: int
    current_mib: float
    peak_mib: float


def _rss_mib(proc: psutil.Process) -> float:
    try:
        return proc.memory_info().rss / 2**20
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


def _peak_mib(proc: psutil.Process) -> float:
    """The process's resident high-water mark (VmHWM); 0 when unavailable."""
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            line = next((x for x in fh if x.startswith("VmHWM:")), "")
    except OSError:
        return 0.0
    return int(line.split()[1]) / 1024.0 if line else 0.0


def _replica_processes(app: str, deployment: str) -> list[psutil.Process]:
    """Serve replica actors of ``deployment`` (Ray names their processes
    ``ray::ServeReplica:<app>:<deployment>``) and all their descendants."""
    marker = f"ServeReplica:{app}:{deployment}"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
                found.extend(proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def measure(app: str) -> list[ComponentMemory]:
    out = []
    for component, deployment in COMPONENTS.items():
        procs = _replica_processes(app, deployment)
        out.append(ComponentMemory(
            component, len(procs),
            current_mib=sum(_rss_mib(p) for p in procs), peak_mib=sum(_peak_mib(p) for p in procs),
        ))
    return out


def table(rows: list[tuple[str, ComponentMemory]]) -> str:
    return console.table(["target", "component", "processes", "current MiB", "peak MiB"],
                         [[t, m.component, m.num_processes, f"{m.current_mib:.0f}", f"{m.peak_mib:.0f}"]
                          for t, m in rows])


@dataclass(frozen=True)
class Growth:
    component: str
    after_warmup_mib: float
    at_end_mib: float

    @property
    def growth_mib(self) -> float:
        return self.at_end_mib - self.after_warmup_mib


def growth(app: str, send, num_requests: int = 1000, warmup_requests: int = 100,
           progress=None) -> list[Growth]:
    """Resident memory after ``warmup_requests`` and after ``num_requests`` sequential
    requests (``send(i)`` sends the i-th); a leak shows as growth proportional to requests."""
    before: dict[str, float] = {}
    for i in range(num_requests):
        send(i)
        if i + 1 == warmup_requests:
            before = {m.component: m.current_mib for m in measure(app)}
        if progress:
            progress(i + 1, num_requests)
    return [Growth(m.component, before.get(m.component, float("nan")), m.current_mib) for m in measure(app)]


def growth_table(pair: str, rows: list[Growth], num_requests: int, warmup_requests: int) -> str:
    header = ["target", "component", f"RSS after {warmup_requests} requests MiB", f"after {num_requests} MiB",
              "growth MiB"]
    return console.table(header, [[pair, g.component, f"{g.after_warmup_mib:.1f}", f"{g.at_end_mib:.1f}",
                                   f"{g.growth_mib:+.1f}"] for g in rows])
