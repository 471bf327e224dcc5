"""cluster/*.yaml validate against Ray's Serve schema and build with our builder."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "cluster").glob("serve-*.yaml"))


def test_both_configs_exist():
    assert {p.name for p in CONFIGS} >= {"serve-local.yaml", "serve-gpu.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_and_builds(path):
    from ray.serve.schema import ServeDeploySchema

    from relay_ray.config import RelayConfig
    from relay_ray.serve.builder import build_app, tier_deployment_options
    from relay_ray.types import Tier

    raw = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    assert schema.grpc_options.grpc_servicer_functions, "the gRPC proxy must serve RelayService"
    assert raw["grpc_options"].get("enable_reflection", True)
    (app,) = raw["applications"]
    assert app["import_path"] == "relay_ray.serve.builder:app_builder"
    config = RelayConfig.model_validate(app["args"])
    assert build_app(config) is not None
    large = tier_deployment_options(Tier.LARGE, config.large)
    if config.large.tensor_parallel_size > 1 and config.large.on_gpu:
        bundles = large["placement_group_bundles"]
        assert len(bundles) == config.large.tensor_parallel_size and all(b["GPU"] == 1 for b in bundles)


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
])
def test_bad_config_is_rejected_naming_the_field(bad, field):
    from pydantic import ValidationError

    from relay_ray.config import RelayConfig

    with pytest.raises(ValidationError) as info:
        RelayConfig.model_validate(bad)
    assert field in str(info.value)
