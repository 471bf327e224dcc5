"""One Ray instance per test session with three relay applications on Serve's gRPC proxy.

- ``pair``: the demo pair (large and small models differ) for policy behaviour;
- ``same``: both tiers serve the *same* model, two replicas each, behind two controller
  replicas: handoff exactness, replica affinity, and the fault tests (which kill replicas and
  wait for all of them to be back before they end);
- ``edge``: a small pair behind one controller with a tight admission limit, for tests of
  the service's edges: metrics (its counters of policy ``rstitch`` are moved by the metrics
  test only), admission, deadlines and cancellation (other policies).
Engines start once per session (about two minutes on 2 cores) and are shared by all tests.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
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


# KV cache per engine: demo-large needs 24 KiB per token in fp32, demo-small 2 KiB; these hold
# 16 sequences of 1024 tokens with room to spare.
KV_CACHE_MIB = {"demo-large": 448, "demo-small": 64}


# The session's Ray starts its workers (Serve's proxy, the controllers, the tier replicas) at this
# niceness (Ray's default is 15) and the engines they spawn at 19: the engines keep both cores busy,
# and the control plane must not wait for them. At 15 against 19 the proxy got 2.4 times an engine's
# share of a core when both wanted it; at 0 against 19, 68 times (docs/reliability.md, "Whose tail").
# A load-generating client on the server's two cores runs at the workers' niceness too: an equal
# share with the proxy and the controllers, as a client elsewhere would take none of it.
RAY_WORKER_NICENESS = 0
ENGINE_NICENESS = 19  # added to the replica's (TierConfig.engine_niceness); the kernel caps it at 19


def tier(model: str, bind: str, **extra) -> dict:
    return {"model": str(MODELS / model), "dtype": "float32", "max_model_len": 1024, "block_size": 32,
            "kv_cache_memory_mib": KV_CACHE_MIB[model], "cpu_threads_bind": bind, "max_num_seqs": 16,
            "engine_niceness": ENGINE_NICENESS, **extra}


def at_ray_worker_niceness() -> None:
    """Lower the calling thread to :data:`RAY_WORKER_NICENESS` (Linux niceness is per thread;
    threads it starts inherit it)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RAY_WORKER_NICENESS)


EDGE_ONGOING, EDGE_QUEUED = 4, 4  # the edge application's admission limit: 8 requests
# The edge application requires a bearer token (rpc/auth.py); the file holds both, for rotation.
EDGE_TOKEN, EDGE_TOKEN_2 = "edge-token-a5f0c3", "edge-token-second-7d21"

@dataclass(frozen=True)
class RelayServer:
    address: str
    trace_file: Path
    metrics_url: str
    http_url: str  # Serve's HTTP proxy: application ``x`` serves the OpenAI API under {http_url}/x/v1
    tokens_file: Path | None = None

    def client(self, app: str, token: str | None = None):
        from relay_ray.client import RelayClient

        token = token or (EDGE_TOKEN if app == "edge" else None)
        return RelayClient(self.address, app_name=app, timeout_s=300, token=token)


@pytest.fixture(scope="session")
def relay_server(tmp_path_factory):
    if not (MODELS / "demo-large" / "config.json").exists():
        pytest.fail("models are missing: run `make models` (make test does)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from relay_ray.telemetry.tracing import TracingConfig, tracing_env

    trace_file = tmp_path_factory.mktemp("traces") / "spans.jsonl"
    tokens_file = tmp_path_factory.mktemp("auth") / "tokens"
    tokens_file.write_text(f"# edge application tokens\n{EDGE_TOKEN}\n{EDGE_TOKEN_2}\n")
    # Only traces the client asks for (a sampled traceparent) are recorded, as Serve's default
    # 1% would mostly do: recording every request would slow Serve's proxy for the other tests.
    os.environ.update(tracing_env(TracingConfig(exporter="file", file_path=str(trace_file), sampling_ratio=0.0)))
    import ray
    from ray import serve
    from ray.serve.api import RunTarget

    from relay_ray.bench.console import WORKER_NICENESS_ENV
    from relay_ray.config import RelayConfig
    from relay_ray.controller.limits import InputLimits
    from relay_ray.serve.builder import SERVICER_FUNCTIONS, build_app
    from relay_ray.serve.local import mark_session, proxy_env, reap_session

    os.environ.update(proxy_env(InputLimits()))  # every app keeps the default prompt limit
    mark_session()
    grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
    # Ray's daemons read the workers' niceness when they start: only this session's cluster gets it
    # (the suite's other clusters keep Ray's default).
    saved_niceness = os.environ.get(WORKER_NICENESS_ENV)
    os.environ[WORKER_NICENESS_ENV] = str(RAY_WORKER_NICENESS)
    try:
        ray.init(include_dashboard=False, log_to_driver=False, _metrics_export_port=metrics_port)
    finally:
        if saved_niceness is None:
            os.environ.pop(WORKER_NICENESS_ENV)
        else:
            os.environ[WORKER_NICENESS_ENV] = saved_niceness
    serve.start(
        http_options={"host": "127.0.0.1", "port": http_port},
        grpc_options={"port": grpc_port, "grpc_servicer_functions": list(SERVICER_FUNCTIONS),
                      "enable_reflection": True},
    )
    # `pair` runs prefill-ahead (off by default) so the tests cover it; `same` runs the defaults
    # but for a one-token first engine chunk on its large tier (off by default), which the
    # exactness tests then cover.
    pair = RelayConfig(large=tier("demo-large", "0"), small=tier("demo-small", "1"),
                       controller={"max_new_tokens_limit": 512, "prefill_ahead": True})
    same = RelayConfig(large=tier("demo-small", "0", num_replicas=2, first_chunk_tokens=1),
                       small=tier("demo-small", "1", num_replicas=2),
                       controller={"max_new_tokens_limit": 512, "num_replicas": 2})
    edge = RelayConfig(large=tier("demo-small", "0"), small=tier("demo-small", "1"),
                       controller={"max_new_tokens_limit": 512, "max_ongoing_requests": EDGE_ONGOING,
                                   "max_queued_requests": EDGE_QUEUED},
                       auth={"tokens_file": str(tokens_file)})
    started = time.perf_counter()
    serve.run_many([RunTarget(build_app(pair), name="pair", route_prefix="/pair"),
                    RunTarget(build_app(same), name="same", route_prefix="/same",
                              external_scaler_enabled=True),  # test_drain resizes it
                    RunTarget(build_app(edge), name="edge", route_prefix="/edge")])
    print(f"\nrelay applications ready in {time.perf_counter() - started:.0f} s")
    yield RelayServer(f"127.0.0.1:{grpc_port}", trace_file, f"http://127.0.0.1:{metrics_port}/metrics",
                      f"http://127.0.0.1:{http_port}", tokens_file)
    serve.shutdown()
    ray.shutdown()
    reap_session()


def _need_trained_models() -> Path:
    demo_models = ROOT / "demo-models"
    if not (demo_models / "arith-large" / "config.json").exists():
        pytest.fail("demo-models/ is missing the trained models (they are committed; see docs/quality.md)")
    return demo_models


# Module scope: the tier servers stop when the module ends (kept for the session, their memory
# starved the multi-node test's own cluster).
@pytest.fixture(scope="module")
def arith_servers() -> dict[str, str]:
    """The trained models as standalone gRPC tier servers, started side by side: addresses of
    ``large`` (core 0), ``caller`` and ``small`` (core 1)."""
    from tests.integration.tier_servers import launch_tier, stop_tier, wait_listening

    demo_models = _need_trained_models()
    procs = {}
    try:
        for name, tier, bind in (("large", "large", "0"), ("caller", "small", "1"), ("small", "small", "1")):
            procs[name] = launch_tier(demo_models / f"arith-{name}", tier, bind)
        yield {name: wait_listening(proc, f"arith-{name}") for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            stop_tier(proc)


@pytest.fixture(scope="session")
def pair_client(relay_server):
    with relay_server.client("pair") as client:
        yield client


@pytest.fixture(scope="session")
def same_client(relay_server):
    with relay_server.client("same") as client:
        yield client


@pytest.fixture(scope="session")
def down_app(relay_server) -> str:
    """An engine-free application: a controller whose tiers are gRPC endpoints nobody listens
    on (a tier outage; 503 on the OpenAI API). Deployed on first use; returns its route prefix."""
    from ray import serve

    from relay_ray.config import ControllerConfig
    from relay_ray.serve.builder import CONTROLLER_DEPLOYMENT_NAME
    from relay_ray.serve.deployments import RelayIngress

    nobody = f"127.0.0.1:{free_port()}"
    controller = ControllerConfig(transport="grpc", large_endpoints=(nobody,), small_endpoints=(nobody,))
    ingress = serve.deployment(RelayIngress).options(name=CONTROLLER_DEPLOYMENT_NAME, ray_actor_options={"num_cpus": 0})
    serve.run(ingress.bind(None, None, controller.model_dump(mode="json"), {"large": 0, "small": 0},
                              "down-app-secret-of-16-bytes-or-more"),
              name="down", route_prefix="/down")
    yield "/down"
    serve.delete("down")
