"""Node types of a Ray cluster description, read and validated the way Ray reads them.

- Ray cluster launcher YAML (``ray up``): the autoscaler's own defaults fill-out and schema
  check (``prepare_config`` + ``validate_config``, what ``ray up`` runs before it contacts the
  cloud). Node resources must be written out: without a cloud they cannot be auto-detected.
- KubeRay ``RayService`` / ``RayCluster`` manifests: the Ray autoscaler's own translation of
  the head and worker groups into node types (GPU limits, ``rayStartParams`` resources).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from relay_ray.errors import RelayInputError


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: Mapping[str, float]
    min_workers: int  # the head type: always exactly one node
    max_workers: int
    is_head: bool = False

    @property
    def min_nodes(self) -> int:
        return 1 if self.is_head else self.min_workers

    @property
    def max_nodes(self) -> int:
        return 1 if self.is_head else self.max_workers

    def describe(self) -> str:
        shown = {k: v for k, v in self.resources.items() if k not in ("memory", "object_store_memory")}
        return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(shown.items())) + "}"


@dataclass(frozen=True)
class ClusterSpec:
    path: Path
    kind: str  # "launcher" | "kuberay"
    node_types: tuple[NodeType, ...]
    max_workers: int  # global bound on worker nodes

    def node_type(self, name: str) -> NodeType:
        return next(t for t in self.node_types if t.name == name)


def validate_launcher_config(raw: dict) -> dict:
    """The launcher config as ``ray up`` resolves it (defaults filled), schema-checked.

    Raises ``jsonschema.ValidationError`` / ``ValueError`` as Ray does.
    """
    import logging

    from ray.autoscaler._private.util import prepare_config, validate_config

    log = logging.getLogger("ray.autoscaler._private.util")
    level = log.level
    log.setLevel(logging.WARNING)  # "setting max workers for head node type to 0"
    try:
        config = prepare_config(copy.deepcopy(raw))
        validate_config(config)
    finally:
        log.setLevel(level)
    return config


def _node_types(config: dict) -> tuple[NodeType, ...]:
    head = config["head_node_type"]
    return tuple(
        NodeType(name, {k: float(v) for k, v in (spec.get("resources") or {}).items()},
                 int(spec.get("min_workers", 0)), int(spec.get("max_workers", 0)), name == head)
        for name, spec in config["available_node_types"].items()
    )


def ray_cluster_cr(manifest: dict) -> dict:
    """The RayCluster custom resource inside a RayService (or the RayCluster itself)."""
    kind = manifest.get("kind")
    metadata = {"name": manifest.get("metadata", {}).get("name", "relay"),
                "namespace": manifest.get("metadata", {}).get("namespace", "default")}
    if kind == "RayService":
        return {"metadata": metadata, "spec": manifest["spec"]["rayClusterConfig"]}
    if kind == "RayCluster":
        return {"metadata": metadata, "spec": manifest["spec"]}
    raise RelayInputError("cluster", f"kind {kind!r} is not a RayService or RayCluster")


def kuberay_autoscaling_config(manifest: dict) -> dict:
    """The autoscaling config the Ray autoscaler derives from a KubeRay manifest (validated)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    return _derive_autoscaling_config_from_ray_cr(ray_cluster_cr(manifest))


def load_cluster(path: str | Path) -> ClusterSpec:
    """Read a launcher YAML or a KubeRay manifest; raises RelayInputError when Ray rejects it."""
    path = Path(path)
    if not path.is_file():
        raise RelayInputError("cluster", f"{path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        if "kind" in raw:
            config, kind = kuberay_autoscaling_config(raw), "kuberay"
        else:
            config, kind = validate_launcher_config(raw), "launcher"
    except RelayInputError:
        raise
    except Exception as exc:  # jsonschema.ValidationError, ValueError, KeyError from Ray's checks
        message = getattr(exc, "message", None) or str(exc)
        raise RelayInputError("cluster", f"{path}: Ray rejects it: {message}") from exc
    return ClusterSpec(path, kind, _node_types(config), int(config["max_workers"]))
