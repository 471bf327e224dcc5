"""``relay-ray``: serve the relay, talk to it, run a standalone tier.

Policy flags (``--tau``, ``--cues``, ``--large-tokens`` ...) are derived from the policies'
typed parameter models, so they never drift from what the server accepts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from relay_ray.bench import command as bench_command
from relay_ray.client import add_connection_args
from relay_ray.errors import RelayInputError
from relay_ray.policies import REGISTRY

# A problem of the trained demo pair's task (docs/quality.md); not in its training split.
DEMO_PROMPT = ("Tom has 7 boxes with 238 apples in each box. Tom gets 165 more apples. "
               "How many apples does Tom have now?")
DEMO_POLICIES = ("small-only", "relaygen", "rstitch")
# Calibrated (`relay-ray calibrate rstitch|relaygen`, docs/quality.md): tau on the dev split.
DEMO_PARAMS = {"rstitch": {"tau": 0.12}}
DEMO_CUES_FILE = "demo-models/relaygen-cues.json"
_TIER_STYLE = {1: ("L", "\033[1;35m"), 2: ("S", "\033[36m")}  # proto Tier values


def _policy_fields() -> dict[str, tuple[set[str], object]]:
    """Every policy parameter: name -> (policies that accept it, pydantic field)."""
    fields: dict[str, tuple[set[str], object]] = {}
    for name, cls in REGISTRY.items():
        for field_name, info in cls.Params.model_fields.items():
            fields.setdefault(field_name, (set(), info))[0].add(name)
    return fields


def _add_policy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="", choices=sorted(REGISTRY),
                        help="relay policy (default: the server's default)")
    group = parser.add_argument_group("policy parameters (each applies to the policies listed)")
    for field_name, (policies, info) in sorted(_policy_fields().items()):
        many = "tuple" in str(info.annotation)
        group.add_argument(
            f"--{field_name.replace('_', '-')}", dest=f"param_{field_name}", nargs="+" if many else None,
            metavar="V", help=f"{info.description or field_name} [{', '.join(sorted(policies))}]",
        )


def _policy_params(args: argparse.Namespace) -> dict:
    params = {}
    if getattr(args, "cues_file", None):
        if args.policy != "relaygen":
            raise RelayInputError("--cues-file", f"applies to relaygen, not {args.policy or 'the default'}")
        from relay_ray.quality.runs import load_cue_file

        params["cues"] = list(load_cue_file(args.cues_file))
    for field_name, (policies, _) in _policy_fields().items():
        value = getattr(args, f"param_{field_name}")
        if value is None:
            continue
        if args.policy not in policies:
            flag = "--" + field_name.replace("_", "-")
            raise RelayInputError(flag, f"applies to {', '.join(sorted(policies))}, not {args.policy or 'the default'}")
        params[field_name] = [v.encode().decode("unicode_escape") for v in value] if isinstance(value, list) else value
    return params


def _render(response, color: bool) -> str:
    parts = []
    for seg in response.segments:
        tag, style = _TIER_STYLE.get(seg.tier, ("?", ""))
        parts.append(f"{style}{seg.text}\033[0m" if color else f"[{tag}]{seg.text}")
    return "".join(parts)


def _stats_lines(response) -> list[str]:
    s = response.stats
    share = f"{100 * s.large_token_share:.1f}%"
    return [
        f"tokens: large {s.large_tokens}, small {s.small_tokens} (large share {share}); "
        f"generated incl. dropped: large {s.large_generated_tokens}, small {s.small_generated_tokens}",
        f"segments: {s.num_segments}, switches: {s.num_switches}, handoff: {s.handoff_mode}, "
        f"latency: {s.latency_ms:.0f} ms, finish: {_finish_name(s.finish_reason)}",
    ]


def _finish_name(value: int) -> str:
    from relay_ray.v1 import common_pb2

    return common_pb2.FinishReason.Name(value).removeprefix("FINISH_REASON_").lower()


def _print_response(response, policy: str, color: bool) -> None:
    legend = "\033[1;35mlarge\033[0m / \033[36msmall\033[0m" if color else "[L] large / [S] small"
    print(f"--- policy {policy or '(server default)'} ({legend}) ---")
    print(_render(response, color))
    for line in _stats_lines(response):
        print(line)


def cmd_generate(args: argparse.Namespace) -> int:
    from relay_ray.client import build_request, client_from_args
    from relay_ray.types import ChatMessage, Sampling

    sampling = Sampling(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    prompt = [ChatMessage("user", args.prompt)] if args.chat else args.prompt
    request = build_request(prompt, args.policy, _policy_params(args), sampling, args.max_new_tokens, args.request_id)
    color = sys.stdout.isatty() and not args.no_color
    with client_from_args(args, args.timeout_s) as client:
        if args.stream:
            for event in client.generate_stream(request):
                kind = event.WhichOneof("event")
                if kind == "delta" and not args.json:
                    tag, style = _TIER_STYLE.get(event.delta.tier, ("?", ""))
                    print(f"{style}{event.delta.text}\033[0m" if color else event.delta.text, end="", flush=True)
                elif kind == "final":
                    response = event.final
            print()
        else:
            response = client.generate(request)
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(response), indent=2))
    elif args.stream:
        print("\n".join(_stats_lines(response)))
    else:
        _print_response(response, args.policy, color)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from relay_ray.serve.local import load_serve_file, start_local, stop_local

    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # `kill` and process managers stop it cleanly too
    signal.signal(signal.SIGINT, stop)
    serve_file = load_serve_file(args.config)
    print(f"starting Ray Serve with {args.config} (tiers take ~1 min to load) ...", flush=True)
    start_local(serve_file)
    # ray.init installed its own SIGTERM handler (it aborts the process without stopping the
    # engines): take it back.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    auth = "bearer token required (RELAY_RAY_TOKEN for relay-ray generate)" if serve_file.relay.auth.enabled \
        else "no authentication"
    print(f"relay serving (Ctrl-C stops): gRPC on every interface, port {serve_file.grpc_port} (Serve's gRPC proxy "
          f"cannot bind one address: keep the port private, and give remote clients `relay-ray gateway` with TLS); "
          f"{auth}. Try:\n  relay-ray generate \"{DEMO_PROMPT}\" --policy rstitch --tau 0.3", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop_local()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from relay_ray.client import RelayClient, build_request
    from relay_ray.serve.local import load_serve_file, start_local, stop_local
    from relay_ray.types import ChatMessage

    serve_file = load_serve_file(args.config)
    started = time.perf_counter()
    print(f"[demo] starting a local Ray instance and the relay from {args.config} ...", flush=True)
    start_local(serve_file)
    print(f"[demo] ready in {time.perf_counter() - started:.0f} s; asking: {args.prompt!r}", flush=True)
    color = sys.stdout.isatty()
    try:
        with RelayClient(f"127.0.0.1:{serve_file.grpc_port}") as client:
            for policy in args.policies:
                request = build_request([ChatMessage("user", args.prompt)], policy, _demo_params(policy),
                                        max_new_tokens=args.max_new_tokens)
                _print_response(client.generate(request), policy, color)
    finally:
        stop_local()
    return 0


def _demo_params(policy: str) -> dict | None:
    """The demo's parameters; relaygen takes the calibrated cue file when it is there."""
    from pathlib import Path

    if policy == "relaygen" and Path(DEMO_CUES_FILE).is_file():
        from relay_ray.quality.runs import load_cue_file

        return {"cues": list(load_cue_file(DEMO_CUES_FILE))}
    return DEMO_PARAMS.get(policy)


def cmd_tier_server(args: argparse.Namespace) -> int:
    import asyncio

    from relay_ray.config import TierConfig
    from relay_ray.engines.vllm_tier import VllmTierEngine
    from relay_ray.rpc.segment_server import start_segment_server
    from relay_ray.types import Tier

    config = TierConfig(model=args.model, dtype=args.dtype, max_model_len=args.max_model_len,
                        kv_cache_space_gib=args.kv_cache_space_gib, cpu_threads_bind=args.cpu_threads_bind)

    from relay_ray.rpc.auth import TierSecret

    secret = TierSecret(os.environ.get(args.secret_env, "") if args.secret_env else "")
    if args.secret_env and not secret.value:
        raise RelayInputError("--secret-env", f"${args.secret_env} is empty or unset")

    async def run() -> None:
        engine = VllmTierEngine(Tier(args.tier), config)
        await engine.start()
        server, port = await start_segment_server(engine, args.host, args.port, authorize=secret.check)
        access = "callers with the secret" if secret.value else "any caller (no --secret-env)"
        print(f"SegmentService ({args.tier}) listening on {args.host}:{port} for {access}", flush=True)
        try:
            await server.wait_for_termination()
        finally:
            engine.shutdown()

    asyncio.run(run())
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from relay_ray.rpc.gateway import start_gateway

    for flag, value in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if not Path(value).is_file():
            raise RelayInputError(flag, f"{value} does not exist")

    async def run() -> None:
        server, port = await start_gateway(args.listen, args.upstream, Path(args.tls_cert).read_bytes(),
                                           Path(args.tls_key).read_bytes())
        host = args.listen.rsplit(":", 1)[0]
        print(f"TLS gateway on {host}:{port} -> {args.upstream}", flush=True)
        await server.wait_for_termination()

    asyncio.run(run())
    return 0


def _eval(args: argparse.Namespace) -> int:
    from relay_ray.quality.command import run

    return run(args)


def _calibrate(args: argparse.Namespace) -> int:
    from relay_ray.quality.calibrate_command import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay-ray",
        description="Relay generation on Ray Serve: a large and a small model take turns writing one answer.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the relay application until Ctrl-C")
    p.add_argument("--config", default="cluster/serve-local.yaml", help="Serve config file (YAML)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="start the relay, answer one prompt with a few policies, stop")
    p.add_argument("--config", default="cluster/serve-local.yaml", help="Serve config file (YAML)")
    p.add_argument("--prompt", default=DEMO_PROMPT)
    p.add_argument("--policies", nargs="+", default=list(DEMO_POLICIES), choices=sorted(REGISTRY))
    p.add_argument("--max-new-tokens", type=int, default=320)
    p.set_defaults(func=cmd_demo)

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
    _add_policy_args(p)
    p.set_defaults(func=cmd_generate)

    bench_command.add_parser(sub)

    from relay_ray.quality.calibrate_command import add_arguments as add_calibrate_arguments
    from relay_ray.quality.command import add_arguments as add_eval_arguments

    p = sub.add_parser("eval", help="accuracy, large share, switches and latency of policies on a JSONL dataset")
    add_eval_arguments(p)
    p.set_defaults(func=_eval)

    p = sub.add_parser("calibrate", help="calibrate relaygen cues or the rstitch threshold on a dataset")
    add_calibrate_arguments(p)
    p.set_defaults(func=_calibrate)

    p = sub.add_parser("gateway", help="TLS endpoint for clients in front of Serve's (plaintext) gRPC port",
                       description="Terminates TLS and forwards RelayService calls, with their metadata "
                                   "(bearer token included), to Serve's gRPC port, which then stays private.")
    p.add_argument("--listen", default="0.0.0.0:9443", help="host:port clients connect to with TLS")
    p.add_argument("--upstream", default="127.0.0.1:9000", help="Serve's gRPC proxy (keep it private)")
    p.add_argument("--tls-cert", required=True, metavar="PEM", help="server certificate chain")
    p.add_argument("--tls-key", required=True, metavar="PEM", help="server private key")
    p.set_defaults(func=cmd_gateway)

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
    p.set_defaults(func=cmd_tier_server)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RelayInputError as exc:
        print(f"relay-ray: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # gRPC errors etc.: one clear line, not a traceback
        import grpc

        if isinstance(exc, grpc.RpcError):
            print(f"relay-ray: server answered {exc.code().name}: {exc.details()}", file=sys.stderr)
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                print("  is the relay running? start it with `relay-ray serve`", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
