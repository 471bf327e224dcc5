"""Cluster descriptions: launcher YAMLs pass Ray's own validation, the KubeRay manifest is
rendered from serve-gpu.yaml without drift, and check-cluster fails on inconsistent pairs
(shown with broken copies of the committed files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from relay_ray.cli import main
from relay_ray.config import RelayConfig
from relay_ray.deploy.check import check
from relay_ray.deploy.cluster_spec import kuberay_autoscaling_config, load_cluster
from relay_ray.deploy.commands import check_pair
from relay_ray.deploy.kuberay import render
from relay_ray.deploy.placement import placements
from relay_ray.errors import RelayInputError

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
PAIRS = [("ray-cluster-gpu.yaml", "serve-gpu.yaml"), ("ray-cluster-gpu-1.yaml", "serve-gpu-1.yaml"),
         ("kuberay-rayservice.yaml", "serve-gpu.yaml"), ("kuberay-rayservice.yaml", "kuberay-rayservice.yaml")]


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _write(tmp_path: Path, name: str, raw: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _relay(name: str) -> RelayConfig:
    return RelayConfig.model_validate(_load(name)["applications"][0]["args"])


# --- Ray cluster launcher YAML -------------------------------------------------------------

@pytest.mark.parametrize("name", ["ray-cluster-gpu.yaml", "ray-cluster-gpu-1.yaml"])
def test_launcher_yaml_passes_rays_validation(name):
    spec = load_cluster(CLUSTER / name)  # prepare_config (defaults fill-out) + validate_config (schema)
    assert spec.kind == "launcher" and any(t.is_head for t in spec.node_types)
    head = next(t for t in spec.node_types if t.is_head)
    assert head.resources.get("CPU", 0) > 0


def test_launcher_installs_the_project_with_its_cuda_extra():
    raw = _load("ray-cluster-gpu.yaml")
    assert any("[cuda]" in cmd for cmd in raw["setup_commands"])
    assert raw["docker"]["image"].startswith("rayproject/ray:2.60.0")


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d["available_node_types"]["large-gpu"].update(min_worker=1), "min_worker"),  # typo
    (lambda d: d["available_node_types"]["small-gpu"].update(max_workers="four"), "four"),
    (lambda d: d.update(head_node_type="nope"), "head_node_type"),
    (lambda d: d.update(max_workers=1), "max_workers"),  # below the sum of min_workers
])
def test_a_broken_launcher_copy_is_rejected_by_ray(tmp_path, mutate, needle):
    raw = _load("ray-cluster-gpu.yaml")
    mutate(raw)
    with pytest.raises(RelayInputError) as info:
        load_cluster(_write(tmp_path, "broken.yaml", raw))
    assert "Ray rejects it" in str(info.value) and needle in str(info.value)


# --- KubeRay RayService --------------------------------------------------------------------

def test_rayservice_serve_config_is_serve_gpu_yaml():
    from ray.serve.schema import ServeDeploySchema

    from relay_ray.serve.builder import build_app

    serve_v2 = yaml.safe_load(_load("kuberay-rayservice.yaml")["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_v2)
    (app,) = serve_v2["applications"]
    config = RelayConfig.model_validate(app["args"])
    assert config == _relay("serve-gpu.yaml")
    assert build_app(config) is not None
    source = _load("serve-gpu.yaml")
    for key in ("proxy_location", "http_options", "grpc_options"):
        assert serve_v2[key] == source[key]


def test_rayservice_worker_groups_are_the_launcher_node_types():
    derived = kuberay_autoscaling_config(_load("kuberay-rayservice.yaml"))  # Ray's own translation (validated)
    launcher = {t.name: t for t in load_cluster(CLUSTER / "ray-cluster-gpu.yaml").node_types}
    for name, node_type in derived["available_node_types"].items():
        source = next(t for t in launcher.values() if t.is_head) if name == "headgroup" else launcher[name]
        assert {k: float(v) for k, v in node_type["resources"].items()} == dict(source.resources), name
        if not source.is_head:
            assert (node_type["min_workers"], node_type["max_workers"]) == (source.min_workers, source.max_workers)
    assert len(derived["available_node_types"]) == len(launcher)


def test_every_rayservice_pod_bounds_the_serve_proxys_messages():
    manifest = _load("kuberay-rayservice.yaml")
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    serve = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    prompt_bytes = max(RelayConfig.model_validate(a["args"]).controller.input_limits.max_prompt_bytes
                       for a in serve["applications"])
    for group in groups:  # a proxy runs on every node
        (container,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert int(env["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"]) == prompt_bytes + (1 << 20), container["name"]
        # and the OpenAI API's admission gate on the proxy's HTTP side (rpc/http_admission.py)
        assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "relay_ray.rpc.http_admission:proxy_middlewares"


def test_committed_rayservice_has_not_drifted():
    text = render(Path("cluster/serve-gpu.yaml"), load_cluster(Path("cluster/ray-cluster-gpu.yaml")))
    assert (CLUSTER / "kuberay-rayservice.yaml").read_text() == text, (
        "re-render: relay-ray render-kuberay cluster/serve-gpu.yaml cluster/ray-cluster-gpu.yaml "
        "-o cluster/kuberay-rayservice.yaml")


def test_drift_check_fails_on_a_changed_serve_config(tmp_path, monkeypatch, capsys):
    import shutil

    (tmp_path / "cluster").mkdir()
    for name in ("serve-gpu.yaml", "ray-cluster-gpu.yaml", "kuberay-rayservice.yaml"):
        shutil.copy(CLUSTER / name, tmp_path / "cluster" / name)
    monkeypatch.chdir(tmp_path)
    argv = ["render-kuberay", "cluster/serve-gpu.yaml", "cluster/ray-cluster-gpu.yaml",
            "-o", "cluster/kuberay-rayservice.yaml", "--check"]
    assert main(argv) == 0  # the copies agree
    serve = _load("serve-gpu.yaml")
    serve["applications"][0]["args"]["small"]["autoscaling"]["max_replicas"] = 12  # edited, not re-rendered
    _write(tmp_path / "cluster", "serve-gpu.yaml", serve)
    assert main(argv) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(argv[:-1]) == 0  # re-render
    assert main(argv) == 0
    assert "max_replicas: 12" in (tmp_path / "cluster" / "kuberay-rayservice.yaml").read_text()


# --- check-cluster -------------------------------------------------------------------------

@pytest.mark.parametrize("cluster,serve", PAIRS)
def test_committed_pairs_fit_exactly(cluster, serve):
    _, results = check_pair(CLUSTER / cluster, CLUSTER / serve)
    for _, result in results:
        assert result.ok, result.errors
        assert not result.warnings, result.warnings  # min/max workers match the tiers' bounds


def test_gpus_per_tier_at_min_and_max_scale():
    _, [(_, result)] = check_pair(CLUSTER / "ray-cluster-gpu.yaml", CLUSTER / "serve-gpu.yaml")
    gpus = {(r.name, r.scale): r.gpus for r in result.rows}
    assert gpus == {("large", "min"): 4, ("large", "max"): 16, ("small", "min"): 1, ("small", "max"): 4,
                    ("controller", "min"): 0, ("controller", "max"): 0}
    assert result.nodes_used["max"] == {"head": 1, "large-gpu": 4, "small-gpu": 4}


def test_single_gpu_config_packs_everything_on_one_gpu():
    config = _relay("serve-gpu-1.yaml")
    assert config.small.num_replicas == 4 and config.large.num_replicas == 1
    assert config.large.num_gpus + 4 * config.small.num_gpus == 1
    _, [(_, result)] = check_pair(CLUSTER / "ray-cluster-gpu-1.yaml", CLUSTER / "serve-gpu-1.yaml")
    assert sum(r.gpus for r in result.rows if r.scale == "max") == 1


def _broken_cluster(tmp_path, mutate, name="ray-cluster-gpu.yaml"):
    raw = _load(name)
    mutate(raw)
    return load_cluster(_write(tmp_path, name, raw))


@pytest.mark.parametrize("mutate,tier,node_type", [
    # Too few large nodes for the large tier's max_replicas (4).
    (lambda d: d["available_node_types"]["large-gpu"].update(max_workers=2), "tier large", "large-gpu"),
    # Nodes of 2 GPUs cannot hold a tensor-parallel-4 replica.
    (lambda d: d["available_node_types"]["large-gpu"]["resources"].update(GPU=2), "tier large", "large-gpu lacks GPU"),
    # The small node type lost its marker: no node offers relay_small.
    (lambda d: d["available_node_types"]["small-gpu"]["resources"].pop("relay_small"), "tier small",
     "small-gpu lacks relay_small"),
    # 3 small nodes x 4 replicas < 16.
    (lambda d: d["available_node_types"]["small-gpu"].update(max_workers=3), "tier small", "small-gpu"),
])
def test_an_inconsistent_pair_fails_naming_tier_and_node_type(tmp_path, mutate, tier, node_type):
    result = check(placements(_relay("serve-gpu.yaml")), _broken_cluster(tmp_path, mutate))
    assert not result.ok
    (error,) = result.errors
    assert tier in error and node_type in error


def test_a_fifth_small_replica_does_not_fit_the_single_gpu(tmp_path):
    config = _relay("serve-gpu-1.yaml")
    config = config.model_copy(update={"small": config.small.model_copy(update={"num_replicas": 5})})
    result = check(placements(config), load_cluster(CLUSTER / "ray-cluster-gpu-1.yaml"))
    (error,) = result.errors
    assert "tier small" in error and "gpu-1" in error and "only 4 fit" in error


def test_min_workers_below_the_minimum_scale_warns(tmp_path):
    cluster = _broken_cluster(tmp_path, lambda d: d["available_node_types"]["small-gpu"].update(min_workers=0))
    result = check(placements(_relay("serve-gpu.yaml")), cluster)
    assert result.ok and any("small-gpu" in w and "min_workers" in w for w in result.warnings)


def test_memory_share_above_the_gpu_share_warns():
    config = _relay("serve-gpu-1.yaml")
    config = config.model_copy(update={"small": config.small.model_copy(update={"gpu_memory_utilization": 0.2})})
    result = check(placements(config), load_cluster(CLUSTER / "ray-cluster-gpu-1.yaml"))
    assert any("tier small" in w and "gpu_memory_utilization" in w for w in result.warnings)


def test_check_cluster_command_prints_the_table_and_fails_on_a_broken_copy(tmp_path, capsys):
    assert main(["check-cluster", str(CLUSTER / "ray-cluster-gpu.yaml"), str(CLUSTER / "serve-gpu.yaml")]) == 0
    out = capsys.readouterr().out
    assert "| large | max | 4 | 16 |" in out and "| small | max | 16 | 4 |" in out and "OK" in out
    raw = _load("ray-cluster-gpu.yaml")
    raw["available_node_types"]["large-gpu"]["max_workers"] = 2
    broken = _write(tmp_path, "cluster.yaml", raw)
    assert main(["check-cluster", str(broken), str(CLUSTER / "serve-gpu.yaml")]) == 1
    captured = capsys.readouterr()
    assert "| large | max | 2 of 4 |" in captured.out and "INCONSISTENT" in captured.out
    assert "tier large" in captured.err and "large-gpu" in captured.err


def test_check_cluster_names_a_missing_file(capsys):
    assert main(["check-cluster", "/nonexistent.yaml", str(CLUSTER / "serve-gpu.yaml")]) == 2
    assert "/nonexistent.yaml" in capsys.readouterr().err


# --- builder: tier resources ---------------------------------------------------------------

def test_marker_resources_reach_the_replica_and_the_first_bundle():
    from relay_ray.serve.builder import tier_deployment_options
    from relay_ray.types import Tier

    config = _relay("serve-gpu.yaml")
    large = tier_deployment_options(Tier.LARGE, config.large)
    assert large["ray_actor_options"]["resources"] == {"relay_large": 1}
    assert large["placement_group_bundles"][0] == {"CPU": 1.0, "GPU": 1, "relay_large": 1}
    assert all("relay_large" not in b for b in large["placement_group_bundles"][1:])
    small = tier_deployment_options(Tier.SMALL, config.small)
    assert small["ray_actor_options"]["resources"] == {"relay_small": 1}
    plain = tier_deployment_options(Tier.SMALL, _relay("serve-local.yaml").small)
    assert "resources" not in plain["ray_actor_options"]


@pytest.mark.parametrize("resources", [{"GPU": 1}, {"relay_small": 0}])
def test_standard_or_empty_resources_are_rejected(resources):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="resources"):
        RelayConfig.model_validate({"large": {"model": "m"}, "small": {"model": "m", "resources": resources}})
