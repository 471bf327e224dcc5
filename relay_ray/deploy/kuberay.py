"""Render the KubeRay ``RayService`` manifest from the Serve config and the launcher YAML.

One source of truth: ``serveConfigV2`` is the Serve config file with each relay application's
``args`` re-rendered from its validated :class:`RelayConfig`; every container's environment
bounds Serve's gRPC proxy messages and gates its HTTP proxy (:func:`relay_ray.serve.local.proxy_env`); the worker groups are the node
types of the Ray cluster launcher YAML (GPUs as ``nvidia.com/gpu`` limits, marker resources
as ``rayStartParams.resources``, min/max workers as min/max replicas). ``relay-ray
render-kuberay --check`` (and a unit test) fail when the committed manifest drifts.
"""

from __future__ import annotations

import json
from pathlib import Path

import ray
import yaml

from relay_ray.config import RelayConfig
from relay_ray.controller.limits import InputLimits
from relay_ray.serve.local import proxy_env
from relay_ray.deploy.cluster_spec import ClusterSpec, NodeType

DEFAULT_IMAGE = "relay-ray:0.1.0-gpu"  # cluster/Dockerfile.gpu
_STANDARD = ("CPU", "GPU", "memory", "object_store_memory")
_GIB = 1 << 30


class _Literal(str):
    """A multi-line string dumped as a YAML literal block."""


def _dumper() -> type[yaml.SafeDumper]:
    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(_Literal, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|"))
    return Dumper


def serve_config_v2(serve_raw: dict) -> dict:
    """The Serve config with every application's ``args`` re-rendered from its RelayConfig."""
    out = {k: v for k, v in serve_raw.items() if k != "applications"}
    apps = []
    for app in serve_raw.get("applications") or []:
        config = RelayConfig.model_validate(app.get("args") or {})
        apps.append({**app, "args": config.model_dump(mode="json", exclude_unset=True)})
    out["applications"] = apps
    return out


def _quantity(resources: dict, key: str) -> str | None:
    value = resources.get(key)
    if not value:
        return None
    if key == "memory":
        return f"{int(value) // _GIB}Gi"
    return f"{value:g}"


def _container(name: str, image: str, node: NodeType, env: list[dict], ports: list[dict] | None = None) -> dict:
    limits = {}
    for key, k8s in (("CPU", "cpu"), ("memory", "memory"), ("GPU", "nvidia.com/gpu")):
        quantity = _quantity(dict(node.resources), key)
        if quantity:
            limits[k8s] = quantity
    container = {"name": name, "image": image, "env": [dict(e) for e in env],  # copies: no YAML anchors
                 "resources": {"limits": limits, "requests": dict(limits)}}
    if ports:
        container["ports"] = ports
    if node.resources.get("GPU"):
        container["volumeMounts"] = [{"mountPath": "/dev/shm", "name": "dshm"}]
    return container


def _pod(container: dict) -> dict:
    spec: dict = {"containers": [container]}
    if "volumeMounts" in container:  # vLLM's workers exchange tensors through shared memory
        spec["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    return {"spec": spec}


def _proxy_env(serve_raw: dict) -> list[dict]:
    """Every node runs a Serve proxy: bound its gRPC messages by the largest prompt limit, and
    put the admission gate on its HTTP side."""
    limits = [RelayConfig.model_validate(app.get("args") or {}).controller.input_limits
              for app in serve_raw.get("applications") or []]
    widest = max(limits, key=lambda lim: lim.max_prompt_bytes, default=InputLimits())
    return [{"name": k, "value": v} for k, v in proxy_env(widest).items()]


def _start_params(node: NodeType) -> dict:
    custom = {k: int(v) for k, v in node.resources.items() if k not in _STANDARD}
    if not custom:
        return {}
    # KubeRay's format: a JSON object inside a quoted string.
    return {"resources": '"' + json.dumps(custom, sort_keys=True).replace('"', '\\"') + '"'}


def rayservice(serve_raw: dict, cluster: ClusterSpec, image: str = DEFAULT_IMAGE, name: str = "relay",
               idle_timeout_s: int = 600) -> dict:
    head = next(t for t in cluster.node_types if t.is_head)
    grpc_port = int((serve_raw.get("grpc_options") or {}).get("port", 9000))
    http_port = int((serve_raw.get("http_options") or {}).get("port", 8000))
    ports = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
             {"containerPort": 10001, "name": "client"}, {"containerPort": http_port, "name": "serve"},
             {"containerPort": grpc_port, "name": "grpc"}]
    head_params = {"dashboard-host": "0.0.0.0", "num-cpus": f"{head.resources.get('CPU', 0):g}",
                   **_start_params(head)}
    env = _proxy_env(serve_raw)
    workers = []
    for t in cluster.node_types:
        if t.is_head:
            continue
        workers.append({
            "groupName": t.name,
            "replicas": t.min_workers,
            "minReplicas": t.min_workers,
            "maxReplicas": t.max_workers,
            "rayStartParams": _start_params(t),
            "template": _pod(_container("ray-worker", image, t, env)),
        })
    serve_text = yaml.safe_dump(serve_config_v2(serve_raw), sort_keys=False, width=100)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": _Literal(serve_text),
            "rayClusterConfig": {
                "rayVersion": ray.__version__,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": idle_timeout_s},
                "headGroupSpec": {"rayStartParams": head_params,
                                  "template": _pod(_container("ray-head", image, head, env, ports))},
                "workerGroupSpecs": workers,
            },
        },
    }


def render(serve_path: str | Path, cluster: ClusterSpec, image: str = DEFAULT_IMAGE, name: str = "relay") -> str:
    """The manifest text (with a header naming its sources and the command)."""
    serve_path = Path(serve_path)
    serve_raw = yaml.safe_load(serve_path.read_text()) or {}
    body = yaml.dump(rayservice(serve_raw, cluster, image, name), Dumper=_dumper(), sort_keys=False, width=100)
    command = f"relay-ray render-kuberay {serve_path.as_posix()} {cluster.path.as_posix()}"
    if image != DEFAULT_IMAGE:
        command += f" --image {image}"
    header = (
        "# KubeRay RayService for the relay: GENERATED, do not edit. Re-render after changing\n"
        f"# {serve_path.name} or {cluster.path.name}:\n"
        f"#   {command} -o <this file>\n"
        "# serveConfigV2 is the Serve config re-rendered from its RelayConfig; worker groups are the\n"
        "# launcher YAML's node types. The image is cluster/Dockerfile.gpu built and pushed to your\n"
        "# registry (pass --image). Apply: kubectl apply -f <this file>\n"
    )
    return header + body
