"""``relay-ray demo``: start the relay, answer one prompt with a few policies, stop; and the
OpenAI URL and curl line that reach a served relay (``relay-ray serve`` prints them too)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from relay_ray.cli.output import print_response

# A problem of the trained demo pair's task (docs/quality.md); not in its training split.
DEMO_PROMPT = ("Tom has 7 boxes with 238 apples in each box. Tom gets 165 more apples. "
               "How many apples does Tom have now?")
DEMO_POLICIES = ("small-only", "relaygen", "rstitch")
# Calibrated (`relay-ray calibrate rstitch|relaygen`, docs/quality.md): tau on the dev split.
DEMO_PARAMS = {"rstitch": {"tau": 0.12}}
DEMO_CUES_FILE = "demo-models/relaygen-cues.json"


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
                request = build_request([ChatMessage("user", args.prompt)], policy, demo_params(policy),
                                        max_new_tokens=args.max_new_tokens)
                print_response(client.generate(request), policy, color)
        _openai_demo(serve_file, args.policies[-1], args.prompt, args.max_new_tokens)
    finally:
        stop_local()
    return 0


def openai_url(serve_file) -> str:
    """Base URL of the OpenAI API of a Serve file's relay application."""
    http = serve_file.raw.get("http_options") or {}
    prefix = (serve_file.raw["applications"][0].get("route_prefix") or "/").rstrip("/")
    return f"http://127.0.0.1:{http.get('port', 8000)}{prefix}/v1"


def _openai_body(policy: str, prompt: str, max_tokens: int) -> dict:
    from relay_ray.rpc.openai_convert import model_id

    body = {"model": model_id(policy), "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0}
    params = demo_params(policy)
    if params:
        body["relay"] = {"params": params}
    return body


def curl_line(serve_file, policy: str, max_tokens: int, prompt: str = DEMO_PROMPT) -> str:
    """A curl command asking the served relay's OpenAI API (with the demo's parameters)."""
    import shlex

    body = json.dumps(_openai_body(policy, prompt, max_tokens))
    auth = " -H \"Authorization: Bearer $RELAY_RAY_TOKEN\"" if serve_file.relay.auth.enabled else ""
    return (f"curl {openai_url(serve_file)}/chat/completions -H 'Content-Type: application/json'{auth} "
            f"-d {shlex.quote(body)}")


def _openai_demo(serve_file, policy: str, prompt: str, max_tokens: int) -> None:
    """Ask the same relay once more over its OpenAI API, and show the curl line that does it."""
    import urllib.request

    print(f"--- the same relay over the OpenAI API (any OpenAI client works with base URL "
          f"{openai_url(serve_file)}) ---\n{curl_line(serve_file, policy, max_tokens, prompt)}")
    request = urllib.request.Request(f"{openai_url(serve_file)}/chat/completions",
                                     data=json.dumps(_openai_body(policy, prompt, max_tokens)).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        answer = json.load(response)
    relay = answer["usage"].get("relay", {})
    print(answer["choices"][0]["message"]["content"])
    print(f"usage: {answer['usage']['prompt_tokens']} prompt + {answer['usage']['completion_tokens']} completion "
          f"tokens; large share {100 * relay.get('large_token_share', 0):.1f}%, "
          f"switches {relay.get('num_switches', 0)}")


def demo_params(policy: str) -> dict | None:
    """The demo's parameters; relaygen takes the calibrated cue file when it is there."""
    from pathlib import Path

    if policy == "relaygen" and Path(DEMO_CUES_FILE).is_file():
        from relay_ray.quality.runs import load_cue_file

        return {"cues": list(load_cue_file(DEMO_CUES_FILE))}
    return DEMO_PARAMS.get(policy)
