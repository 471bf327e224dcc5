"""What each deployment of a relay asks Ray for, derived from the Serve options the builder
produces (so a check sees exactly what Serve will request).

A replica is a list of resource bundles: one bundle for a plain replica (``ray_actor_options``),
one per GPU for a tensor-parallel one (its placement group, all bundles on one node).
The capacity planner's view of the same deployment: the replicas deployed and the units (GPUs,
or shares of bound CPU cores) a replica occupies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from relay_ray.config import RelayConfig, TierConfig
from relay_ray.deploy.capacity import TIERS, TierUnits
from relay_ray.types import Tier

CONTROLLER = "controller"
RESOURCE_QUANTUM = 10_000  # Ray accounts resources in units of 1/10000 (fractional GPUs)


def _clean(resources: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in resources.items() if v}


@dataclass(frozen=True)
class Placement:
    """One deployment's replicas: the bundles of one replica and the replica range."""

    name: str  # "large" | "small" | "controller"
    deployment: str  # Serve deployment name
    bundles: tuple[Mapping[str, float], ...]
    strict_pack: bool  # all bundles of a replica on one node
    min_replicas: int
    max_replicas: int
    gpu_memory_fraction: float | None = None  # vLLM gpu_memory_utilization: a share of the whole device

    @property
    def per_replica(self) -> dict[str, float]:
        """Total resources of one replica (all bundles)."""
        total: dict[str, float] = {}
        for bundle in self.bundles:
            for key, value in bundle.items():
                total[key] = total.get(key, 0.0) + value
        return total

    @property
    def gpus_per_replica(self) -> float:
        return self.per_replica.get("GPU", 0.0)

    def describe(self) -> str:
        """``{CPU: 1, GPU: 1, relay_large: 1} + 3 x {GPU: 1} (one node)``"""
        def fmt(bundle: Mapping[str, float]) -> str:
            return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(bundle.items())) + "}"

        first, rest = self.bundles[0], self.bundles[1:]
        if not rest:
            return fmt(first)
        if all(b == rest[0] for b in rest):
            return f"{fmt(first)} + {len(rest)} x {fmt(rest[0])} (one node)"
        return " + ".join(fmt(b) for b in self.bundles) + " (one node)"


def _replica_range(cfg: TierConfig) -> tuple[int, int]:
    if cfg.autoscaling is not None:
        return cfg.autoscaling.min_replicas, cfg.autoscaling.max_replicas
    return cfg.num_replicas, cfg.num_replicas


def tier_placement(tier: Tier, cfg: TierConfig) -> Placement:
    from relay_ray.serve.builder import tier_deployment_options

    options = tier_deployment_options(tier, cfg)
    actor = options["ray_actor_options"]
    if "placement_group_bundles" in options:
        bundles = tuple(_clean(b) for b in options["placement_group_bundles"])
        strict = options.get("placement_group_strategy") == "STRICT_PACK"
    else:
        bundles = (_clean({"CPU": actor.get("num_cpus", 0), "GPU": actor.get("num_gpus", 0),
                           **actor.get("resources", {})}),)
        strict = True
    low, high = _replica_range(cfg)
    return Placement(tier.value, options["name"], bundles, strict, low, high, cfg.gpu_memory_utilization)


def placements(config: RelayConfig) -> list[Placement]:
    """The large tier, the small tier and the controller, in that order."""
    from relay_ray.serve.builder import CONTROLLER_DEPLOYMENT_NAME

    c = config.controller
    controller = Placement(CONTROLLER, CONTROLLER_DEPLOYMENT_NAME, (_clean({"CPU": c.num_cpus}),), True,
                           c.num_replicas, c.num_replicas)
    return [tier_placement(Tier.LARGE, config.large), tier_placement(Tier.SMALL, config.small), controller]


def _cores(binding: str | None) -> set[int]:
    """CPU cores of a VLLM_CPU_OMP_THREADS_BIND value ("0", "0-3", "0|1", "0,2")."""
    cores: set[int] = set()
    for part in filter(None, (binding or "").replace("|", ",").split(",")):
        lo, _, hi = part.partition("-")
        if lo.strip().isdigit():
            cores.update(range(int(lo), int(hi or lo) + 1))
    return cores


def tier_units(config: RelayConfig, tier: str) -> TierUnits:
    """GPUs per replica on GPU tiers; on CPU tiers the cores its replicas are bound to, shared."""
    cfg = getattr(config, tier)
    placement = next(p for p in placements(config) if p.name == tier)
    if placement.gpus_per_replica > 0:
        return TierUnits("GPU", placement.gpus_per_replica)
    n = cfg.num_replicas
    binds = cfg.cpu_threads_bind_by_replica or (cfg.cpu_threads_bind,)
    cores = set().union(*(_cores(binds[r % len(binds)]) for r in range(n)))
    return TierUnits("core", (len(cores) or 1) / n)


def deployed_replicas(config: RelayConfig) -> dict[str, int]:
    """Replicas of each tier as deployed (the autoscaling minimum where it scales)."""
    out = {}
    for tier in TIERS:
        cfg = getattr(config, tier)
        out[tier] = cfg.autoscaling.min_replicas if cfg.autoscaling else cfg.num_replicas
    return out
