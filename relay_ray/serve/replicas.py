"""Find the processes of a relay application's Serve replicas and their engines.

For fault tests and the chaos tool: they kill replicas by the pids Ray reports for them
(nothing is matched by name), and check that no engine process outlives its replica; and for
the load-test scripts that move an engine's processes between cores (``bind_threads``).
"""

from __future__ import annotations

import os
import signal
import time

import psutil

ENGINE_TITLE = "EngineCore"  # vLLM's engine core process title (VLLM::EngineCore)


def _pid(self) -> int:  # runs inside the replica actor
    return os.getpid()


def _engine_load(self) -> dict[str, int]:  # runs inside a tier replica actor
    return self._replica_impl._user_callable_wrapper.user_callable.engine_load()


def _pid_and_load(self) -> tuple[int, dict[str, int]]:  # fails until the replica's engine is up
    return os.getpid(), _engine_load(self)


def _replica_actors(app: str, deployment: str) -> list:
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    actors = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == "serve" and entry["name"].startswith(prefix):
            try:
                actors.append(ray.get_actor(entry["name"], namespace="serve"))
            except ValueError:  # gone meanwhile
                continue
    return actors


def replica_pids(app: str, deployment: str) -> list[int]:
    """Pids of the live replicas of ``deployment`` in ``app``."""
    import ray

    pids = []
    for actor in _replica_actors(app, deployment):
        try:
            pids.append(ray.get(actor.__ray_call__.remote(_pid), timeout=10))
        except Exception:  # dead, restarting or not yet started
            continue
    return sorted(pids)


def wait_for_replicas(app: str, deployment: str, count: int, timeout_s: float = 180.0) -> list[int]:
    """Pids of the live replicas once there are ``count`` (or whatever there are at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = replica_pids(app, deployment)
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(1.0)


def engine_loads(app: str, deployment: str) -> list[dict[str, int]]:
    """``TierServer.engine_load()`` of every live replica of a tier."""
    import ray

    loads = []
    for actor in _replica_actors(app, deployment):
        try:
            loads.append(ray.get(actor.__ray_call__.remote(_engine_load), timeout=10))
        except Exception:
            continue
    return loads


def _kill_self_if_decoding(self) -> int:  # runs inside a tier replica actor
    """SIGKILL this replica (by its own pid) if its engine is generating a segment's tokens
    right now; else return the pid. Checking and killing in one call inside the replica means
    the kill lands mid-segment: from outside, the check's round trip outlasts a short segment."""
    load = _engine_load(self)
    if load["unfinished_requests"] and any(not job.endswith("/warm") for job in load["jobs"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def kill_decoding_replica(app: str, deployment: str, timeout_s: float = 20.0) -> int | None:
    """SIGKILL a ready tier replica of ``app`` while its engine decodes a segment, and return
    its pid (None if no replica was seen decoding in ``timeout_s``): a fault test's way to hit a
    request mid-segment rather than an idle replica. Kills only a replica of this application,
    by its own pid."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for actor in _replica_actors(app, deployment):
            try:
                pid, _ = ray.get(actor.__ray_call__.remote(_pid_and_load), timeout=10)
            except Exception:  # dead, restarting or still loading its engine
                continue
            try:
                ray.get(actor.__ray_call__.remote(_kill_self_if_decoding), timeout=10)
            except ray.exceptions.RayActorError:
                return pid  # it killed itself mid-segment
            except Exception:
                continue
        time.sleep(0.02)
    return None


def engine_of(replica_pid: int) -> psutil.Process:
    """The engine core process a replica started."""
    (engine,) = [p for p in psutil.Process(replica_pid).children() if ENGINE_TITLE in " ".join(p.cmdline())]
    return engine


def engine_processes(app: str, deployment: str) -> list[tuple[int, list[int], set[int]]]:
    """Per replica of ``deployment``: its engine core's pid, the pids of that core's workers, and
    the cores the workers are bound to (``cpu_threads_bind``)."""
    out = []
    for replica in replica_pids(app, deployment):
        core = engine_of(replica)
        workers = core.children()
        out.append((core.pid, [w.pid for w in workers], set().union(*(set(w.cpu_affinity()) for w in workers))))
    return out


def bind_threads(pid: int, cpus: set[int]) -> None:
    """Every thread of process ``pid`` onto ``cpus`` (a process or thread that ended meanwhile is
    skipped): a process's affinity is per thread on Linux, and its threads already run."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


def engines_by_parent(session: str | None = None) -> dict[int, int]:
    """Engine core processes (of a local session, see ``serve.local``) counted by parent pid."""
    from relay_ray.serve.local import SESSION_ENV

    session = session or os.environ.get(SESSION_ENV)
    counts: dict[int, int] = {}
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or []) or proc.info["name"] or ""
            if (ENGINE_TITLE in title and proc.environ().get(SESSION_ENV) == session
                    and proc.status() != psutil.STATUS_ZOMBIE):
                counts[proc.ppid()] = counts.get(proc.ppid(), 0) + 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return counts


def orphaned_engine_processes(session: str | None = None) -> list[int]:
    """vLLM processes (engine cores, their workers) of a local session whose parent is gone."""
    from relay_ray.serve.local import SESSION_ENV

    session = session or os.environ.get(SESSION_ENV)
    orphans = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or []) or proc.info["name"] or ""
            if ("VLLM::" in title and proc.environ().get(SESSION_ENV) == session
                    and proc.status() != psutil.STATUS_ZOMBIE and proc.ppid() == 1):
                orphans.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return orphans


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20
