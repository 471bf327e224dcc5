"""Run a Serve config file's applications on a local (or given) Ray instance."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from relay_ray.config import RelayConfig
from relay_ray.errors import RelayInputError

# Every process started below a local session inherits this marker, so that engine
# processes orphaned by a killed replica (vLLM's EngineCore survives a SIGKILLed parent)
# can be found and stopped when the session ends.
SESSION_ENV = "RELAY_RAY_LOCAL_SESSION"


def mark_session() -> str:
    """Tag this process (and everything it starts from now on) as a new local session."""
    import uuid

    os.environ[SESSION_ENV] = uuid.uuid4().hex
    return os.environ[SESSION_ENV]


def reap_session() -> int:
    """Kill leftover processes of this session (other than this one); returns how many."""
    import psutil

    session = os.environ.get(SESSION_ENV)
    if not session:
        return 0
    killed = 0
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(SESSION_ENV) == session:
                proc.kill()
                killed += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return killed


@dataclass(frozen=True)
class ServeFile:
    """A parsed Serve config file whose (single) application is a relay."""

    path: Path
    raw: dict
    relay: RelayConfig

    @property
    def grpc_port(self) -> int:
        return int(self.raw.get("grpc_options", {}).get("port", 9000))


def load_serve_file(path: str | Path) -> ServeFile:
    """Parse and validate a Serve config file; relative model paths resolve against the
    working directory, then against the file's parent folder's parent (the repo root)."""
    path = Path(path)
    if not path.is_file():
        raise RelayInputError("config", f"{path} does not exist; pass --config with a Serve YAML file")
    raw = yaml.safe_load(path.read_text()) or {}
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(raw)
    apps = raw.get("applications") or []
    if len(apps) != 1:
        raise RelayInputError("config.applications", "exactly one relay application is expected")
    relay = RelayConfig.model_validate(apps[0].get("args") or {})
    for base in (Path.cwd(), path.resolve().parent.parent):
        relay = relay.resolve_paths(base)
    return ServeFile(path, raw, relay)


def start_local(serve_file: ServeFile, num_cpus: int | None = None) -> None:
    """Start (or connect to) Ray, start Serve with the file's gRPC options, deploy the relay."""
    from ray import serve

    from relay_ray.serve.builder import build_app

    start_serve(serve_file, num_cpus)
    app_raw = serve_file.raw["applications"][0]
    serve.run(build_app(serve_file.relay), name=app_raw.get("name", "relay"),
              route_prefix=app_raw.get("route_prefix", "/"))


def start_serve(serve_file: ServeFile, num_cpus: int | None = None) -> None:
    """Start (or connect to) Ray and start Serve with the file's HTTP/gRPC options."""
    import ray
    from ray import serve

    from relay_ray.telemetry.tracing import tracing_env

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.update(tracing_env(serve_file.relay.tracing))  # Ray processes inherit them
    mark_session()
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=os.environ.get("RELAY_RAY_LOG_TO_DRIVER", "0") == "1")
    serve.start(
        http_options=serve_file.raw.get("http_options", {"host": "127.0.0.1"}),
        grpc_options=serve_file.raw.get("grpc_options"),
    )


def stop_local() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    reap_session()
