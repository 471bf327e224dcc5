"""cluster/*.yaml validate against Ray's Serve schema and build with our builder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "cluster").glob("serve-*.yaml"))


def test_both_configs_exist():
    assert {p.name for p in CONFIGS} >= {"serve-local.yaml", "serve-gpu.yaml"}


def _expected_tier(cfg) -> dict:
    """What a tier deployment must carry for its :class:`TierConfig`."""
    expected = {"max_ongoing_requests": cfg.max_ongoing_requests, "model": cfg.model}
    if cfg.autoscaling is not None:
        expected["replicas"] = (cfg.autoscaling.min_replicas, cfg.autoscaling.max_replicas)
    else:
        expected["replicas"] = cfg.num_replicas
    if cfg.on_gpu and cfg.tensor_parallel_size > 1:  # the GPUs sit in the placement group
        expected["num_gpus"] = 0
        expected["bundles"] = [{"CPU": max(cfg.num_cpus, 1.0), "GPU": 1, **cfg.resources}] + [{"GPU": 1}] * (cfg.tensor_parallel_size - 1)
    else:
        expected["num_gpus"], expected["bundles"] = cfg.num_gpus, None
    return expected


def _built_tier(deployment) -> dict:
    dc, rc = deployment._deployment_config, deployment._replica_config
    auto = dc.autoscaling_config
    return {
        "max_ongoing_requests": dc.max_ongoing_requests,
        "model": rc.init_args[1]["model"],
        "replicas": (auto.min_replicas, auto.max_replicas) if auto else deployment.num_replicas,
        "num_gpus": deployment.ray_actor_options["num_gpus"],
        "bundles": rc.placement_group_bundles,
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_and_builds_the_relay_it_describes(path):
    from ray.serve._private.build_app import build_app as serve_build_app  # what serve.run does
    from ray.serve.handle import DeploymentHandle
    from ray.serve.schema import ServeDeploySchema

    from relay_ray.config import RelayConfig
    from relay_ray.serve.builder import SERVICER_FUNCTIONS, build_app

    raw = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(raw)
    grpc = raw["grpc_options"]
    assert grpc["grpc_servicer_functions"] == list(SERVICER_FUNCTIONS), "the gRPC proxy must serve RelayService"
    assert grpc["enable_reflection"] is True, "grpcurl/grpcui need reflection: set it explicitly"
    (app,) = raw["applications"]
    assert app["import_path"] == "relay_ray.serve.builder:app_builder"
    config = RelayConfig.model_validate(app["args"])
    built = serve_build_app(build_app(config), name=app["name"])
    deployments = {d.name: d for d in built.deployments}
    assert set(deployments) == {"LargeTier", "SmallTier", "RelayController"}
    assert built.ingress_deployment_name == "RelayController"
    assert _built_tier(deployments["LargeTier"]) == _expected_tier(config.large)
    assert _built_tier(deployments["SmallTier"]) == _expected_tier(config.small)
    controller = deployments["RelayController"]
    assert controller.num_replicas == config.controller.num_replicas
    assert controller._deployment_config.max_ongoing_requests == config.controller.max_ongoing_requests
    assert controller._deployment_config.max_queued_requests == config.controller.max_queued_requests
    controller_args = controller._replica_config.init_args
    handles = [a.deployment_name for a in controller_args if isinstance(a, DeploymentHandle)]
    assert handles == ["LargeTier", "SmallTier"], "the controller gets the large tier first, then the small"
    assert config.controller.model_dump(mode="json") in controller_args


def test_gpu_config_has_the_production_shape():
    from relay_ray.config import RelayConfig

    app = yaml.safe_load((ROOT / "cluster" / "serve-gpu.yaml").read_text())["applications"][0]
    config = RelayConfig.model_validate(app["args"])
    assert config.large.tensor_parallel_size == 4 and config.large.num_gpus == 1
    assert config.small.num_gpus == 0.25 and config.small.autoscaling.min_replicas == 4


@pytest.mark.parametrize("bad,field", [
    ({"large": {"model": "m", "max_model_len": 0}, "small": {"model": "m"}}, "max_model_len"),
    ({"large": {"model": "m"}, "small": {"model": "m"}, "controller": {"default_policy": "nope"}}, "default_policy"),
    ({"large": {"model": "m", "tensor_parallel_size": 2, "num_gpus": 0.5}, "small": {"model": "m"}}, "num_gpus"),
    ({"large": {"model": "m"}, "small": {"model": "m", "colour": 1}}, "colour"),
    ({"large": {"model": "m"}, "small": {"model": "m", "autoscaling": {"min_replicas": 3, "max_replicas": 2}}},
     "min_replicas"),
    ({"large": {"model": "m", "autoscaling": {"hysteresis": 1.0}}, "small": {"model": "m"}}, "hysteresis"),
    ({"large": {"model": "m"}, "small": {"model": "m"}, "tracing": {"exporter": "otlp"}}, "otlp_endpoint"),
    ({"large": {"model": "m"}, "small": {"model": "m"}, "tracing": {"exporter": "zipkin"}}, "tracing.exporter"),
    ({"large": {"model": "m"}, "small": {"model": "m"}, "controller": {"kv_session_tiers": ["large"]}},
     "large.kv_sessions.enabled"),
])
def test_bad_config_is_rejected_naming_the_field(bad, field):
    from pydantic import ValidationError

    from relay_ray.config import RelayConfig

    with pytest.raises(ValidationError) as info:
        RelayConfig.model_validate(bad)
    assert field in str(info.value)
