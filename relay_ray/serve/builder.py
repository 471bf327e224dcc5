"""Build the relay Serve application from a :class:`RelayConfig`.

``build_app(config)`` for Python; ``app_builder`` is the ``import_path`` target of Serve
config files (``cluster/*.yaml``), which pass the config as the application's ``args``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from ray import serve
from ray.serve import Application

from relay_ray.autoscale.serve_policy import autoscaling_config
from relay_ray.config import RelayConfig, TierConfig
from relay_ray.serve.deployments import RelayIngress, TierServer
from relay_ray.types import Tier

TIER_DEPLOYMENT_NAMES = {Tier.LARGE: "LargeTier", Tier.SMALL: "SmallTier"}
CONTROLLER_DEPLOYMENT_NAME = "RelayController"
SERVICER_FUNCTIONS = (
    "relay_ray.rpc.registration.add_RelayServiceServicer_to_server",
)
# Every segment of a request carries its request id as Serve session id; hashing it keeps
# the request on one replica (prefix-cache affinity) and falls back if that one is full.
AFFINITY_ROUTER = {
    "request_router_class": "ray.serve.experimental.consistent_hash_router:ConsistentHashRouter",
    "request_router_kwargs": {"num_virtual_nodes": 100, "num_fallback_replicas": 2},
}


def tier_deployment_options(tier: Tier, cfg: TierConfig) -> dict:
    """Serve options of a tier deployment: replicas, resources, placement, routing."""
    options = {
        "name": TIER_DEPLOYMENT_NAMES[tier],
        "num_replicas": cfg.num_replicas,
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "max_queued_requests": cfg.max_queued_requests,
        # VLLM_CONFIGURE_LOGGING=0: vLLM must not replace the logging config Serve set up.
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus,
                              "runtime_env": {"env_vars": {"VLLM_CONFIGURE_LOGGING": "0"}},
                              **({"resources": dict(cfg.resources)} if cfg.resources else {})},
        **({"request_router_config": AFFINITY_ROUTER} if cfg.request_router == "affinity" else {}),
        "health_check_timeout_s": 120,
        "graceful_shutdown_timeout_s": 30,
    }
    if cfg.autoscaling is not None:  # Serve rejects num_replicas together with autoscaling
        del options["num_replicas"]
        options["autoscaling_config"] = autoscaling_config(cfg.autoscaling)
    if cfg.on_gpu and cfg.tensor_parallel_size > 1:
        # vLLM's Ray executor puts one worker per GPU bundle of the replica's placement
        # group; the replica itself only holds the CPU of the first bundle.
        options["ray_actor_options"] = {**options["ray_actor_options"], "num_cpus": max(cfg.num_cpus, 1.0),
                                        "num_gpus": 0}
        first = {"CPU": max(cfg.num_cpus, 1.0), "GPU": 1, **cfg.resources}
        options["placement_group_bundles"] = [first] + [{"GPU": 1}] * (cfg.tensor_parallel_size - 1)
        options["placement_group_strategy"] = "STRICT_PACK"
    return options


# Deployment-level settings: Serve applies a change of these without restarting replicas
# only if the replicas' own arguments do not change with them.
_SCALING_FIELDS = {"num_replicas", "autoscaling", "migration_limit", "request_router", "max_queued_requests",
                   "max_ongoing_requests"}


def replica_args(cfg: TierConfig) -> dict:
    """What a tier replica needs of its config (no scaling fields: see above)."""
    bound = cfg.max_direct_segments or cfg.max_ongoing_requests
    return cfg.model_copy(update={"max_direct_segments": bound}).model_dump(mode="json", exclude=_SCALING_FIELDS)


def build_app(config: RelayConfig, app_secret: str | None = None) -> Application:
    """The relay application: LargeTier and SmallTier deployments behind RelayController.

    ``app_secret`` (random when not given) is handed to the controller and tier replicas
    through Ray: it signs the resume tokens any controller replica of this application
    accepts, and tier replicas serve their direct gRPC port only to callers presenting it.
    """
    tiers = {}
    secret = app_secret or secrets.token_hex(32)
    for tier, tier_cfg in ((Tier.LARGE, config.large), (Tier.SMALL, config.small)):
        deployment = serve.deployment(TierServer).options(**tier_deployment_options(tier, tier_cfg))
        tier_cfg = tier_cfg.model_copy(update={"input_limits": config.controller.input_limits})
        tiers[tier] = deployment.bind(tier.value, replica_args(tier_cfg), secret)
    c = config.controller
    ingress = serve.deployment(RelayIngress).options(
        name=CONTROLLER_DEPLOYMENT_NAME,
        num_replicas=c.num_replicas,
        max_ongoing_requests=c.max_ongoing_requests,
        max_queued_requests=c.max_queued_requests,
        # Over max_queued_requests: gRPC RESOURCE_EXHAUSTED; HTTP (OpenAI API) 429 + Retry-After.
        backpressure_config={"status_code": 429, "retry_after_s": 1},
        ray_actor_options={"num_cpus": c.num_cpus},
    )
    # Only what the controller uses: scaling a tier (num_replicas, autoscaling) must not
    # change the controller's arguments, or Serve would restart the controller replicas.
    migration_limits = {"large": config.large.migration_limit, "small": config.small.migration_limit}
    return ingress.bind(tiers[Tier.LARGE], tiers[Tier.SMALL], c.model_dump(mode="json"), migration_limits, secret,
                        config.auth.model_dump(mode="json"))


def app_builder(args: dict) -> Application:
    """Serve config entry point: ``import_path: relay_ray.serve.builder:app_builder``.

    ``args`` is a :class:`RelayConfig` as a dict; relative model paths resolve against the
    working directory.
    """
    config = RelayConfig.model_validate(args).resolve_paths(Path.cwd())
    return build_app(config)
