"""Does a relay's placement fit a cluster's node types? (``relay-ray check-cluster``)

For each scale (every deployment at its minimum, then at its maximum replica count) the
replicas are packed onto nodes the way Ray must place them: a replica's bundles all on one
node (tensor-parallel placement groups are STRICT_PACK), fractional GPUs shared, custom
marker resources consumed like any other resource. Nodes of a type are added up to the
type's ``max_workers`` (the head: exactly one) and the cluster's global ``max_workers``.

Errors (the pair is inconsistent): a replica no node type can hold, or replicas left over at
maximum scale. Warnings: the minimum scale needs more nodes than ``min_workers`` starts (the
relay waits for the autoscaler), or ``max_workers`` allows nodes the maximum scale never uses.
Resources are counted in Ray's fixed point (1/10000) so 4 x 0.25 GPU is exactly one GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from relay_ray.deploy.cluster_spec import ClusterSpec, NodeType
from relay_ray.deploy.placement import RESOURCE_QUANTUM, Placement

SCALES = ("min", "max")


def _units(resources: Mapping[str, float]) -> dict[str, int]:
    return {k: round(v * RESOURCE_QUANTUM) for k, v in resources.items() if v}


def _fits(free: Mapping[str, int], need: Mapping[str, int]) -> bool:
    return all(free.get(k, 0) >= v for k, v in need.items())


@dataclass
class _Node:
    type: NodeType
    free: dict[str, int]

    def take(self, need: Mapping[str, int]) -> None:
        for k, v in need.items():
            self.free[k] -= v


@dataclass(frozen=True)
class TierRow:
    """One deployment at one scale."""

    name: str
    scale: str
    replicas: int
    placed: int
    gpus: float
    nodes: Mapping[str, int]  # node type -> nodes holding at least one of its replicas


@dataclass
class CheckResult:
    rows: list[TierRow] = field(default_factory=list)
    nodes_used: dict[str, dict[str, int]] = field(default_factory=dict)  # scale -> type -> nodes
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _replicas(p: Placement, scale: str) -> int:
    return p.min_replicas if scale == "min" else p.max_replicas


def _holders(p: Placement, cluster: ClusterSpec) -> list[NodeType]:
    """Node types whose empty node holds one replica (every bundle together)."""
    need = _units(p.per_replica)
    return [t for t in cluster.node_types if _fits(_units(t.resources), need)]


def _missing(p: Placement, t: NodeType) -> str:
    need, have = _units(p.per_replica), _units(t.resources)
    short = [f"{k} {need[k] / RESOURCE_QUANTUM:g} (has {have.get(k, 0) / RESOURCE_QUANTUM:g})"
             for k in sorted(need) if have.get(k, 0) < need[k]]
    return f"{t.name} lacks " + ", ".join(short)


def _pack(placements: list[Placement], cluster: ClusterSpec, scale: str, result: CheckResult) -> None:
    nodes = [_Node(t, _units(t.resources)) for t in cluster.node_types if t.is_head]
    opened = {t.name: 0 for t in cluster.node_types}
    workers = 0
    # Biggest replicas first (tensor-parallel groups before packed fractions).
    order = sorted(placements, key=lambda p: (-p.gpus_per_replica, -len(p.bundles)))
    for p in order:
        want = _replicas(p, scale)
        need = _units(p.per_replica)
        holders = _holders(p, cluster)
        used: dict[str, set[int]] = {}
        placed = 0
        for _ in range(want):
            node = next((n for n in nodes if _fits(n.free, need)), None)
            if node is None:
                # Open the smallest node type that holds the replica and may still grow.
                candidates = [t for t in holders if not t.is_head and opened[t.name] < t.max_workers
                              and workers < cluster.max_workers]
                if not candidates:
                    break
                t = min(candidates, key=lambda t: (t.resources.get("GPU", 0), t.resources.get("CPU", 0)))
                node = _Node(t, _units(t.resources))
                nodes.append(node)
                opened[t.name] += 1
                workers += 1
            node.take(need)
            used.setdefault(node.type.name, set()).add(id(node))
            placed += 1
        gpus = placed * p.gpus_per_replica
        result.rows.append(TierRow(p.name, scale, want, placed, gpus, {k: len(v) for k, v in used.items()}))
        if placed < want and scale == "max":  # the minimum scale is a subset of the maximum
            result.errors.append(_shortfall(p, cluster, scale, want, placed, holders, opened, workers))
    result.nodes_used[scale] = {name: n for name, n in opened.items() if n}
    if any(t.is_head for t in cluster.node_types):
        head = next(t for t in cluster.node_types if t.is_head)
        result.nodes_used[scale][head.name] = 1


def _shortfall(p: Placement, cluster: ClusterSpec, scale: str, want: int, placed: int,
               holders: list[NodeType], opened: Mapping[str, int], workers: int) -> str:
    head = f"tier {p.name}: a replica needs {p.describe()}"
    if not holders:
        reasons = "; ".join(_missing(p, t) for t in cluster.node_types)
        return f"{head}, which no node type offers ({reasons})"
    parts = []
    for t in holders:
        per_node = min((_units(t.resources)[k] // v for k, v in _units(p.per_replica).items()), default=want)
        limit = "the head (one node)" if t.is_head else f"max_workers {t.max_workers}, {opened[t.name]} in use"
        parts.append(f"node type {t.name} holds {per_node} per node ({limit})")
    extra = (f"; the cluster's max_workers {cluster.max_workers} is reached"
             if workers >= cluster.max_workers else "")
    return (f"tier {p.name}: {want} replicas at {scale} scale, only {placed} fit: " + "; ".join(parts)
            + extra + f" (a replica needs {p.describe()})")


def check(placements: list[Placement], cluster: ClusterSpec) -> CheckResult:
    result = CheckResult()
    for p in placements:
        share = p.gpus_per_replica
        if p.gpu_memory_fraction and 0 < share < 1 and p.gpu_memory_fraction > share:
            result.warnings.append(
                f"tier {p.name}: gpu_memory_utilization {p.gpu_memory_fraction:g} (a share of the whole GPU) exceeds "
                f"its num_gpus {share:g}: replicas packed by num_gpus would ask for more than the GPU's memory")
    for scale in SCALES:
        _pack(placements, cluster, scale, result)
    for t in cluster.node_types:
        if t.is_head:
            continue
        at_min = result.nodes_used["min"].get(t.name, 0)
        at_max = result.nodes_used["max"].get(t.name, 0)
        if at_min > t.min_workers:
            result.warnings.append(
                f"node type {t.name}: the minimum scale needs {at_min} node(s), min_workers starts {t.min_workers} "
                "(replicas wait for the autoscaler)")
        if t.max_workers > at_max and not result.errors:
            result.warnings.append(
                f"node type {t.name}: max_workers {t.max_workers}, the maximum scale uses {at_max} "
                "(raise the tiers' max_replicas or lower max_workers)")
    return result


def table(result: CheckResult) -> str:
    """Markdown table: GPUs and nodes per deployment at minimum and maximum scale."""
    lines = ["| deployment | scale | replicas | GPUs | nodes (type x count) |", "|---|---|---|---|---|"]
    for row in sorted(result.rows, key=lambda r: (["large", "small", "controller"].index(r.name)
                                                   if r.name in ("large", "small", "controller") else 9,
                                                   SCALES.index(r.scale))):
        placed = f"{row.placed}" if row.placed == row.replicas else f"{row.placed} of {row.replicas}"
        nodes = ", ".join(f"{k} x {v}" for k, v in sorted(row.nodes.items())) or "-"
        lines.append(f"| {row.name} | {row.scale} | {placed} | {row.gpus:g} | {nodes} |")
    for scale in SCALES:
        gpus = sum(r.gpus for r in result.rows if r.scale == scale)
        used = result.nodes_used.get(scale, {})
        nodes = ", ".join(f"{k} x {v}" for k, v in sorted(used.items()))
        lines.append(f"| **total** | {scale} | | {gpus:g} | {nodes} |")
    return "\n".join(lines)
