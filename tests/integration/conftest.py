"""One Ray instance per test session with two relay applications on Serve's gRPC proxy.

- ``pair``: the demo pair (large and small models differ) for policy behaviour;
- ``same``: both tiers serve the *same* model (the small tier with two replicas), for
  handoff exactness and replica affinity.
Engines start once per session (about two minutes on 2 cores) and are shared by all tests.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tier(model: str, bind: str, **extra) -> dict:
    return {"model": str(MODELS / model), "dtype": "float32", "max_model_len": 1024, "block_size": 32,
            "kv_cache_space_gib": 1, "cpu_threads_bind": bind, "max_num_seqs": 16, **extra}


@dataclass(frozen=True)
class RelayServer:
    address: str
    trace_file: Path
    metrics_url: str
    http_url: str  # Serve's HTTP proxy: application ``x`` serves the OpenAI API under {http_url}/x/v1

    def client(self, app: str):
        from relay_ray.client import RelayClient

        return RelayClient(self.address, app_name=app, timeout_s=300)


@pytest.fixture(scope="session")
def relay_server(tmp_path_factory):
    if not (MODELS / "demo-large" / "config.json").exists():
        pytest.fail("models are missing: run `make models` (make test does)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from relay_ray.telemetry.tracing import TracingConfig, tracing_env

    trace_file = tmp_path_factory.mktemp("traces") / "spans.jsonl"
    os.environ.update(tracing_env(TracingConfig(exporter="file", file_path=str(trace_file))))
    import ray
    from ray import serve
    from ray.serve.api import RunTarget

    from relay_ray.config import RelayConfig
    from relay_ray.serve.builder import SERVICER_FUNCTIONS, build_app
    from relay_ray.serve.local import mark_session, reap_session

    mark_session()
    grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
    ray.init(include_dashboard=False, log_to_driver=False, _metrics_export_port=metrics_port)
    serve.start(
        http_options={"host": "127.0.0.1", "port": http_port},
        grpc_options={"port": grpc_port, "grpc_servicer_functions": list(SERVICER_FUNCTIONS),
                      "enable_reflection": True},
    )
    # `pair` runs prefill-ahead (off by default) so the tests cover it; `same` runs the defaults.
    pair = RelayConfig(large=tier("demo-large", "0"), small=tier("demo-small", "1"),
                       controller={"max_new_tokens_limit": 512, "prefill_ahead": True})
    same = RelayConfig(large=tier("demo-small", "0"), small=tier("demo-small", "1", num_replicas=2),
                       controller={"max_new_tokens_limit": 512})
    started = time.perf_counter()
    serve.run_many([RunTarget(build_app(pair), name="pair", route_prefix="/pair"),
                    RunTarget(build_app(same), name="same", route_prefix="/same")])
    print(f"\nrelay applications ready in {time.perf_counter() - started:.0f} s")
    yield RelayServer(f"127.0.0.1:{grpc_port}", trace_file, f"http://127.0.0.1:{metrics_port}/metrics",
                      f"http://127.0.0.1:{http_port}")
    serve.shutdown()
    ray.shutdown()
    reap_session()


@pytest.fixture(scope="session")
def pair_client(relay_server):
    with relay_server.client("pair") as client:
        yield client


@pytest.fixture(scope="session")
def same_client(relay_server):
    with relay_server.client("same") as client:
        yield client


@pytest.fixture(scope="session")
def overload_apps(relay_server):
    """Two engine-free ingress-only applications for the overload and outage statuses:

    - ``limited``: a RelayController over ``pair``'s tiers admitting one request at a time
      and queueing one (Serve's ``max_queued_requests``; HTTP rejections 429 + Retry-After);
    - ``down``: a RelayController whose tiers are gRPC endpoints nobody listens on.
    Deployed on first use only; returns their route prefixes.
    """
    from ray import serve

    from relay_ray.config import ControllerConfig
    from relay_ray.serve.builder import CONTROLLER_DEPLOYMENT_NAME
    from relay_ray.serve.deployments import RelayIngress

    def ingress(large, small, controller: dict, **options):
        deployment = serve.deployment(RelayIngress).options(name=CONTROLLER_DEPLOYMENT_NAME,
                                                            ray_actor_options={"num_cpus": 0}, **options)
        return deployment.bind(large, small, ControllerConfig.model_validate(controller).model_dump(mode="json"))

    limited = ingress(serve.get_deployment_handle("LargeTier", "pair"), serve.get_deployment_handle("SmallTier", "pair"),
                      {"max_new_tokens_limit": 512}, max_ongoing_requests=1, max_queued_requests=1,
                      backpressure_config={"status_code": 429, "retry_after_s": 1})
    nobody = f"127.0.0.1:{free_port()}"
    down = ingress(None, None, {"transport": "grpc", "large_endpoints": [nobody], "small_endpoints": [nobody]})
    serve.run(limited, name="limited", route_prefix="/limited")
    serve.run(down, name="down", route_prefix="/down")
    yield {"limited": "/limited", "down": "/down"}
    serve.delete("limited")
    serve.delete("down")
