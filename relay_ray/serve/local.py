"""Run a Serve config file's applications on a local (or given) Ray instance."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from relay_ray.config import RelayConfig
from relay_ray.controller.limits import InputLimits
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


PROXY_MESSAGE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"
PROXY_MESSAGE_SLACK_BYTES = 1 << 20  # the rest of a request: cues, roles, ids, a resume token


def proxy_message_env(limits: InputLimits) -> dict[str, str]:
    """The environment that bounds the messages Serve's gRPC proxy accepts (its default is
    2 GiB): the prompt's byte limit plus 1 MiB for the rest of a request. A larger request
    is refused by gRPC itself (RESOURCE_EXHAUSTED) before the proxy parses it or passes it
    to a controller. Ray reads it when the proxy starts, so it must be in the environment
    of the processes that start Ray (``ray start`` on every node of a cluster)."""
    limit = limits.max_prompt_bytes + PROXY_MESSAGE_SLACK_BYTES
    return {PROXY_MESSAGE_ENV: str(limit)}


def proxy_env(limits: InputLimits) -> dict[str, str]:
    """Everything Serve's proxies read from the environment of the processes that start Ray:
    the gRPC message bound (:func:`proxy_message_env`) and the HTTP admission gate
    (:func:`relay_ray.rpc.http_admission.proxy_gate_env`)."""
    from relay_ray.rpc.http_admission import proxy_gate_env

    return {**proxy_message_env(limits), **proxy_gate_env()}


def start_serve(serve_file: ServeFile, num_cpus: int | None = None) -> None:
    """Start (or connect to) Ray and start Serve with the file's HTTP/gRPC options."""
    import ray
    from ray import serve

    from relay_ray.telemetry.tracing import tracing_env

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.update(tracing_env(serve_file.relay.tracing))  # Ray processes inherit them
    for name, value in proxy_env(serve_file.relay.controller.input_limits).items():
        os.environ.setdefault(name, value)  # a local Ray only: a cluster sets it at `ray start`
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
