"""The ``relay-ray`` argument parser: one helper per subcommand (bench, check-cluster,
render-kuberay and plan add their own, from their packages)."""

from __future__ import annotations

import argparse

from relay_ray.bench import command as bench_command
from relay_ray.cli import commands
from relay_ray.cli.demo import DEMO_POLICIES, DEMO_PROMPT, cmd_demo
from relay_ray.cli.policy_flags import add_policy_args
from relay_ray.client import add_connection_args
from relay_ray.policies import REGISTRY


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run the relay application until Ctrl-C")
    p.add_argument("--config", default="cluster/serve-local.yaml", help="Serve config file (YAML)")
    p.set_defaults(func=commands.cmd_serve)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="start the relay, answer one prompt with a few policies, stop")
    p.add_argument("--config", default="cluster/serve-local.yaml", help="Serve config file (YAML)")
    p.add_argument("--prompt", default=DEMO_PROMPT)
    p.add_argument("--policies", nargs="+", default=list(DEMO_POLICIES), choices=sorted(REGISTRY))
    p.add_argument("--max-new-tokens", type=int, default=320)
    p.set_defaults(func=cmd_demo)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="send one prompt to a running relay (gRPC client)")
    p.add_argument("prompt", help="prompt text")
    p.add_argument("--chat", action="store_true", help="send the prompt as a user chat message")
    add_connection_args(p)
    p.add_argument("--max-new-tokens", type=int, default=None, help="token budget (server default 256)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--request-id", default="")
    p.add_argument("--stream", action="store_true", help="print text as it is generated")
    p.add_argument("--json", action="store_true", help="print the whole response as JSON")
    p.add_argument("--no-color", action="store_true")
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("--cues-file", default=None, help="relaygen: cues from `relay-ray calibrate relaygen`")
    add_policy_args(p)
    p.set_defaults(func=commands.cmd_generate)


def _add_deploy(sub) -> None:
    """check-cluster, render-kuberay, plan (relay_ray.deploy)."""
    from relay_ray.deploy import commands as deploy_commands

    deploy_commands.add_parsers(sub)


def _add_eval(sub) -> None:
    from relay_ray.quality.command import add_arguments

    p = sub.add_parser("eval", help="accuracy, large share, switches and latency of policies on a JSONL dataset")
    add_arguments(p)
    p.set_defaults(func=commands.cmd_eval)


def _add_calibrate(sub) -> None:
    from relay_ray.quality.calibrate_command import add_arguments

    p = sub.add_parser("calibrate", help="calibrate relaygen cues or the rstitch threshold on a dataset")
    add_arguments(p)
    p.set_defaults(func=commands.cmd_calibrate)


def _add_gateway(sub) -> None:
    p = sub.add_parser("gateway", help="TLS endpoint for clients in front of Serve's (plaintext) gRPC port",
                       description="Terminates TLS and forwards RelayService calls, with their metadata "
                                   "(bearer token included), to Serve's gRPC port, which then stays private.")
    p.add_argument("--listen", default="0.0.0.0:9443", help="host:port clients connect to with TLS")
    p.add_argument("--upstream", default="127.0.0.1:9000", help="Serve's gRPC proxy (keep it private)")
    p.add_argument("--tls-cert", required=True, metavar="PEM", help="server certificate chain")
    p.add_argument("--tls-key", required=True, metavar="PEM", help="server private key")
    p.set_defaults(func=commands.cmd_gateway)


def _add_tier_server(sub) -> None:
    p = sub.add_parser("tier-server", help="serve one tier engine over gRPC SegmentService")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--tier", choices=["large", "small"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--kv-cache-space-gib", type=int, default=None)
    p.add_argument("--cpu-threads-bind", default=None)
    p.add_argument("--secret-env", default=None, metavar="NAME",
                   help="environment variable holding the secret callers must present (the controller's "
                        "tier_secret_env); without it the port answers any caller: keep it on loopback")
    p.set_defaults(func=commands.cmd_tier_server)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay-ray",
        description="Relay generation on Ray Serve: a large and a small model take turns writing one answer.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_serve, _add_demo, _add_generate, bench_command.add_parser, _add_deploy, _add_eval,
                _add_calibrate, _add_gateway, _add_tier_server):
        add(sub)
    return parser
