"""Resident memory of the relay's processes: each tier (Serve replica + its vLLM engine
processes) and the controller, read from /proc (Linux).

``peak`` is VmHWM (the high-water mark of each process, summed over the component's
processes); ``current`` is VmRSS.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

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


def _status_kib(proc: psutil.Process, key: str) -> int:
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


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
            current_mib=sum(_status_kib(p, "VmRSS") for p in procs) / 1024.0,
            peak_mib=sum(_status_kib(p, "VmHWM") for p in procs) / 1024.0,
        ))
    return out


def table(rows: list[tuple[str, ComponentMemory]]) -> str:
    lines = ["| target | component | processes | current MiB | peak MiB |", "|---|---|---|---|---|"]
    lines += [f"| {t} | {m.component} | {m.num_processes} | {m.current_mib:.0f} | {m.peak_mib:.0f} |"
              for t, m in rows]
    return "\n".join(lines)


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
    lines = [f"| target | component | RSS after {warmup_requests} requests MiB | after {num_requests} MiB | growth MiB |",
             "|---|---|---|---|---|"]
    lines += [f"| {pair} | {g.component} | {g.after_warmup_mib:.1f} | {g.at_end_mib:.1f} | {g.growth_mib:+.1f} |"
              for g in rows]
    return "\n".join(lines)
