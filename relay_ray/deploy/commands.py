"""``relay-ray check-cluster`` and ``relay-ray render-kuberay``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relay_ray.errors import RelayInputError


def _relay_configs(serve_path: str | Path):
    """(app name, RelayConfig) of every application of a Serve config file, schema-checked."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from relay_ray.config import RelayConfig

    path = Path(serve_path)
    if not path.is_file():
        raise RelayInputError("serve", f"{path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if raw.get("kind") == "RayService":  # a KubeRay manifest: its embedded Serve config
        raw = yaml.safe_load(raw["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(raw)
    apps = raw.get("applications") or []
    if not apps:
        raise RelayInputError("serve.applications", f"{path} has no application")
    return [(app.get("name", "relay"), RelayConfig.model_validate(app.get("args") or {})) for app in apps]


def check_pair(cluster_path: str | Path, serve_path: str | Path):
    """[(app name, CheckResult)] for every relay application of the Serve file on the cluster."""
    from relay_ray.deploy.check import check
    from relay_ray.deploy.cluster_spec import load_cluster
    from relay_ray.deploy.placement import placements

    cluster = load_cluster(cluster_path)
    return cluster, [(name, check(placements(config), cluster)) for name, config in _relay_configs(serve_path)]


def run_check_cluster(args: argparse.Namespace) -> int:
    from relay_ray.deploy.check import table

    cluster, results = check_pair(args.cluster, args.serve)
    print(f"cluster {args.cluster} ({cluster.kind}): node types "
          + "; ".join(f"{t.name}{' (head)' if t.is_head else f' x {t.min_workers}..{t.max_workers}'} "
                      f"{t.describe()}" for t in cluster.node_types))
    failed = False
    for name, result in results:
        print(f"\napplication {name} ({args.serve}):\n")
        print(table(result))
        for warning in result.warnings:
            print(f"warning: {warning}")
        for error in result.errors:
            print(f"error: {error}", file=sys.stderr)
        failed |= not result.ok
    print("\n" + ("INCONSISTENT: the placement does not fit the cluster" if failed else "OK: the placement fits"))
    return 1 if failed else 0


def run_render_kuberay(args: argparse.Namespace) -> int:
    from relay_ray.deploy.cluster_spec import load_cluster
    from relay_ray.deploy.kuberay import render

    cluster = load_cluster(args.cluster)
    if cluster.kind != "launcher":
        raise RelayInputError("cluster", "render-kuberay takes the Ray cluster launcher YAML")
    _relay_configs(args.serve)  # validate before rendering
    text = render(args.serve, cluster, args.image, args.name)
    if args.check:
        current = Path(args.output).read_text() if args.output and Path(args.output).is_file() else ""
        if current != text:
            print(f"{args.output} is out of date: re-render with\n  relay-ray render-kuberay {args.serve} "
                  f"{args.cluster} -o {args.output}", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def add_parsers(sub) -> None:
    from relay_ray.deploy import plan_command
    from relay_ray.deploy.kuberay import DEFAULT_IMAGE

    p = sub.add_parser("check-cluster", help="check that a Serve config's tiers fit a Ray cluster's node types")
    p.add_argument("cluster", help="Ray cluster launcher YAML, or a KubeRay RayService/RayCluster manifest")
    p.add_argument("serve", help="Serve config file (or a RayService manifest: its serveConfigV2)")
    p.set_defaults(func=run_check_cluster)

    p = sub.add_parser("render-kuberay", help="render the KubeRay RayService from a Serve config and launcher YAML")
    p.add_argument("serve", help="Serve config file, e.g. cluster/serve-gpu.yaml")
    p.add_argument("cluster", help="Ray cluster launcher YAML, e.g. cluster/ray-cluster-gpu.yaml")
    p.add_argument("-o", "--output", default=None, help="write here (default: stdout)")
    p.add_argument("--image", default=DEFAULT_IMAGE, help="container image with relay_ray installed")
    p.add_argument("--name", default="relay", help="RayService name")
    p.add_argument("--check", action="store_true", help="exit 1 if --output differs from the rendering")
    p.set_defaults(func=run_render_kuberay)

    plan_command.add_parser(sub)
