"""The commands ``relay-ray serve``, ``generate``, ``gateway``, ``tier-server``, ``eval`` and
``calibrate`` (``demo`` is in ``relay_ray.cli.demo``; bench, check-cluster, render-kuberay and
plan live with their packages)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from relay_ray.cli.demo import DEMO_PROMPT, curl_line, openai_url
from relay_ray.cli.output import TIER_STYLE, print_response, stats_lines
from relay_ray.cli.policy_flags import policy_params
from relay_ray.errors import RelayInputError


def _stream(client, request, print_text: bool, color: bool):
    """Print the text as it streams (unless not ``print_text``); the final response."""
    response = None
    for event in client.generate_stream(request):
        kind = event.WhichOneof("event")
        if kind == "delta" and print_text:
            tag, style = TIER_STYLE.get(event.delta.tier, ("?", ""))
            print(f"{style}{event.delta.text}\033[0m" if color else event.delta.text, end="", flush=True)
        elif kind == "final":
            response = event.final
    print()
    if response is None:  # the server closed the stream without its final message
        raise SystemExit("error: the stream ended without a final response; the text above may be "
                         "incomplete: retry, or run without --stream")
    return response


def cmd_generate(args: argparse.Namespace) -> int:
    from relay_ray.client import build_request, client_from_args
    from relay_ray.types import ChatMessage, Sampling

    sampling = Sampling(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    prompt = [ChatMessage("user", args.prompt)] if args.chat else args.prompt
    request = build_request(prompt, args.policy, policy_params(args), sampling, args.max_new_tokens, args.request_id)
    color = sys.stdout.isatty() and not args.no_color
    with client_from_args(args, args.timeout_s) as client:
        if args.stream:
            response = _stream(client, request, not args.json, color)
        else:
            response = client.generate(request)
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(response), indent=2))
    elif args.stream:
        print("\n".join(stats_lines(response)))
    else:
        print_response(response, args.policy, color)
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
          f"{auth}. OpenAI API on {openai_url(serve_file)}. Try:\n"
          f"  relay-ray generate \"{DEMO_PROMPT}\" --policy rstitch --tau 0.3\n"
          f"  {curl_line(serve_file, 'rstitch', 64)}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop_local()
    return 0


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


def cmd_eval(args: argparse.Namespace) -> int:
    from relay_ray.quality.command import run

    return run(args)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from relay_ray.quality.calibrate_command import run

    return run(args)
