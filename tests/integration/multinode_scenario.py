"""A real multi-node Ray cluster on this machine, driven by tests/integration/test_multinode.py.

Run as a separate process (it owns its Ray cluster; the test session's Ray instance lives in
the pytest process):

    python tests/integration/multinode_scenario.py --out facts.json

A head and separate worker nodes (``ray.cluster_utils.Cluster``: one raylet per node) stand
in for the node types of cluster/ray-cluster-gpu.yaml: logical GPUs (Ray schedules them like
real ones; the CPU engines never touch them) and the same marker resources. The relay is
deployed with placement derived exactly as for GPUs (``num_gpus``, ``resources`` through the
builder), after ``check-cluster``'s packing agrees that it fits. The scenario writes what it
observed as JSON (the test asserts on it):

- ``nodes`` / ``replicas``: node type of every node and of every tier/controller replica;
- ``requests``: per relay request, each segment's tier, replica and node type;
- ``spans``: per tier, segments run vs calls that went through a Serve handle (the rest went
  straight to the replica's gRPC endpoint: the direct transport);
- ``removal``: a small node is removed while requests stream; what each client saw, and
  requests sent afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = str(ROOT / "models" / "demo-small")
APP = "relay"
MAX_TOKENS_UNDER_LOAD = 256  # EOS ignored: every request writes exactly this many tokens

# Stand-ins for cluster/ray-cluster-gpu.yaml: (node type, count, resources). The head is the
# only node with CPUs (the controller reserves one, so it stays there).
NODES = (
    ("head", 1, {"CPU": 1}),
    ("large-gpu", 1, {"GPU": 1, "relay_large": 1}),
    ("small-gpu", 2, {"GPU": 1, "relay_small": 1}),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relay_config():
    from relay_ray.config import RelayConfig

    tier = {"model": MODEL, "dtype": "float32", "max_model_len": 512, "block_size": 32, "kv_cache_space_gib": 1,
            "max_num_seqs": 8}
    return RelayConfig(
        large={**tier, "cpu_threads_bind": "0", "num_gpus": 1, "resources": {"relay_large": 1}},
        small={**tier, "cpu_threads_bind": "1", "num_gpus": 0.5, "resources": {"relay_small": 1}, "num_replicas": 2},
        controller={"num_cpus": 1, "max_new_tokens_limit": 512},
    )


def check_fits(config) -> None:
    from relay_ray.deploy.check import check
    from relay_ray.deploy.cluster_spec import ClusterSpec, NodeType
    from relay_ray.deploy.placement import placements

    types = tuple(NodeType(name, res, count, count, name == "head") for name, count, res in NODES)
    result = check(placements(config), ClusterSpec(Path("<local>"), "local", types, 8))
    if not result.ok:
        raise SystemExit(f"the local layout does not fit: {result.errors}")


def start_cluster():
    import ray
    from ray._common.utils import reset_ray_address
    from ray.cluster_utils import Cluster

    (_, _, head_res), *workers = NODES
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": head_res["CPU"], "num_gpus": 0, "include_dashboard": False})
    reset_ray_address()  # no other `ray.init()` on this machine may pick this cluster up
    nodes = {}
    for name, count, res in workers:
        custom = {k: v for k, v in res.items() if k not in ("CPU", "GPU")}
        nodes[name] = [cluster.add_node(num_cpus=0, num_gpus=res.get("GPU", 0), resources=custom)
                       for _ in range(count)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster, nodes


def node_types() -> dict[str, str]:
    """Node id -> stand-in node type (by its marker resources)."""
    import ray

    out = {}
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        res = node["Resources"]
        out[node["NodeID"]] = ("large-gpu" if "relay_large" in res else "small-gpu" if "relay_small" in res
                               else "head")
    return out


def replica_nodes() -> dict[str, dict[str, str]]:
    """Deployment -> {replica unique id: node id} from the actor table (alive actors)."""
    from ray._private import state

    out: dict[str, dict[str, str]] = {}
    for actor in state.actors().values():
        name = actor.get("Name") or ""
        if not name.startswith("SERVE_REPLICA::") or actor.get("State") != "ALIVE":
            continue
        _, deployment, replica = name.removeprefix("SERVE_REPLICA::").split("#")
        out.setdefault(deployment, {})[replica] = actor["Address"]["NodeID"]
    return out


def run_request(client, prompt: str, max_new_tokens: int, params: dict, ignore_eos: bool = False,
                on_segment=None) -> dict:
    """One streamed fixed-ratio request; what the client saw (``on_segment(info)`` per segment)."""
    from relay_ray.client import build_request
    from relay_ray.types import Sampling
    from relay_ray.v1 import common_pb2

    tiers = {common_pb2.TIER_LARGE: "large", common_pb2.TIER_SMALL: "small"}
    request = build_request(prompt, "fixed-ratio", params, Sampling(ignore_eos=ignore_eos),
                            max_new_tokens=max_new_tokens)
    segments, deltas, started = [], 0, time.perf_counter()
    try:
        for event in client.generate_stream(request):
            kind = event.WhichOneof("event")
            if kind == "delta":
                deltas += 1
            elif kind == "segment_end":
                info = {"tier": tiers[event.segment_end.tier], "replica": event.segment_end.replica_id,
                        "tokens": event.segment_end.num_tokens}
                segments.append(info)
                if on_segment is not None:
                    on_segment(info)
            elif kind == "final":
                return {"ok": True, "segments": segments, "tokens": len(event.final.token_ids),
                        "finish": common_pb2.FinishReason.Name(event.final.stats.finish_reason),
                        "migrations": event.final.stats.num_migrations,
                        "latency_s": time.perf_counter() - started, "request_id": event.final.request_id}
        return {"ok": False, "error": "stream ended without a final event", "segments": segments}
    except Exception as exc:  # grpc.RpcError: record what the client saw
        code = getattr(exc, "code", lambda: None)()
        return {"ok": False, "error": f"{getattr(code, 'name', type(exc).__name__)}: "
                                      f"{getattr(exc, 'details', lambda: str(exc))()}",
                "segments": segments, "deltas": deltas, "latency_s": time.perf_counter() - started}


def spans_by_tier(trace_file: Path, request_ids: set[str]) -> dict:
    """Per tier: segments the replicas ran and calls that reached them through a Serve handle."""
    spans = [json.loads(line) for line in trace_file.read_text().splitlines()] if trace_file.exists() else []
    traces = {s["trace_id"] for s in spans if s["name"] == "relay.request"
              and s["attributes"].get("relay.request_id") in request_ids}
    spans = [s for s in spans if s["trace_id"] in traces]
    out = {}
    for tier, deployment in (("large", "LargeTier"), ("small", "SmallTier")):
        out[tier] = {
            "segments": sum(1 for s in spans if s["name"] == f"tier.segment {tier}"),
            "handle_calls": sum(1 for s in spans if s["name"].startswith("replica_handle_request")
                                and deployment in s["name"] and "stream_segment" in s["name"]),
        }
    out["traces"] = len(traces)
    out["names"] = sorted({s["name"] for s in spans})
    return out


def wait_spans(trace_file: Path, request_ids: set[str], want_segments: int, timeout_s: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        found = spans_by_tier(trace_file, request_ids)
        if found["large"]["segments"] + found["small"]["segments"] >= want_segments or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def removal_phase(cluster, small_nodes, client, facts: dict) -> None:
    """Remove the small node serving most in-flight requests while requests stream."""
    replicas = replica_nodes().get("SmallTier", {})
    results: list[dict | None] = [None] * 4
    first_small: dict[int, str] = {}

    def one(i: int) -> None:
        def seen(info: dict) -> None:
            if info["tier"] == "small":
                first_small.setdefault(i, info["replica"])

        results[i] = run_request(client, f"So we add {i} and {7 * i + 3}. Then we", MAX_TOKENS_UNDER_LOAD,
                                 {"large_tokens": 2, "small_tokens": 30}, ignore_eos=True, on_segment=seen)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(first_small) < len(results) and time.monotonic() < deadline:
        time.sleep(0.05)
    # The node whose small replica carries most of the in-flight requests.
    counts: dict[str, int] = {}
    for replica in first_small.values():
        counts[replica] = counts.get(replica, 0) + 1
    victim_replica = max(counts, key=counts.get) if counts else next(iter(replicas))
    victim_node_id = replicas.get(victim_replica)
    victim = next((n for n in small_nodes if n.node_id == victim_node_id), small_nodes[0])
    removed_at = time.perf_counter()
    cluster.remove_node(victim, allow_graceful=False)
    for t in threads:
        t.join(timeout=240)
    after = [run_request(client, f"So we add {i} and 5. Then we", 48, {"large_tokens": 4, "small_tokens": 8})
             for i in range(2)]
    time.sleep(2)  # the GCS marks the removed node's actors dead
    facts["removal"] = {
        "removed_replica": victim_replica,
        "in_flight_on_removed": sum(1 for r in first_small.values() if r == victim_replica),
        "seconds_to_remove": time.perf_counter() - removed_at,
        "outcomes": [dict(r or {"ok": False, "error": "no outcome (thread still running)"},
                          on_removed=first_small.get(i) == victim_replica) for i, r in enumerate(results)],
        "after": after,
        "max_new_tokens": MAX_TOKENS_UNDER_LOAD,
        "small_replicas_alive": sorted(replica_nodes().get("SmallTier", {})),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--skip-removal", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    trace_file = Path(args.out).with_suffix(".spans.jsonl")
    from relay_ray.telemetry.tracing import TracingConfig, tracing_env

    os.environ.update(tracing_env(TracingConfig(exporter="file", file_path=str(trace_file))))
    from relay_ray.serve.local import mark_session, reap_session

    mark_session()
    config = relay_config()
    check_fits(config)
    facts: dict = {"timings_s": {}}
    cluster = None
    try:
        cluster, nodes = start_cluster()
        facts["timings_s"]["cluster"] = time.perf_counter() - t0
        from ray import serve

        from relay_ray.client import RelayClient
        from relay_ray.serve.builder import SERVICER_FUNCTIONS, build_app

        grpc_port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": free_port()},
                    grpc_options={"port": grpc_port, "grpc_servicer_functions": list(SERVICER_FUNCTIONS)})
        serve.run(build_app(config), name=APP, route_prefix="/")
        facts["timings_s"]["deployed"] = time.perf_counter() - t0
        types = node_types()
        facts["nodes"] = types
        placed = replica_nodes()
        facts["replicas"] = {dep: {rid: types.get(nid, "?") for rid, nid in reps.items()}
                             for dep, reps in placed.items()}
        with RelayClient(f"127.0.0.1:{grpc_port}", APP, timeout_s=240) as client:
            requests = [run_request(client, f"So we add {i} and {3 * i + 1}. Then we", 32,
                                    {"large_tokens": 4, "small_tokens": 4}) for i in range(3)]
            for r in requests:
                for seg in r.get("segments", []):
                    deployment = "LargeTier" if seg["tier"] == "large" else "SmallTier"
                    seg["node_type"] = facts["replicas"].get(deployment, {}).get(seg["replica"], "?")
            facts["requests"] = requests
            ids = {r["request_id"] for r in requests if r.get("ok")}
            facts["spans"] = wait_spans(trace_file, ids, sum(len(r.get("segments", [])) for r in requests))
            facts["timings_s"]["relayed"] = time.perf_counter() - t0
            if not args.skip_removal:
                removal_phase(cluster, nodes["small-gpu"], client, facts)
                facts["timings_s"]["removal"] = time.perf_counter() - t0
    finally:
        Path(args.out).write_text(json.dumps(facts, indent=2, default=str))
        try:
            from ray import serve

            serve.shutdown()
        except Exception:
            pass
        import ray

        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        reap_session()
    return 0


if __name__ == "__main__":
    sys.exit(main())
