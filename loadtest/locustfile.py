"""Locust gRPC user for relay_ray: drives RelayService.GenerateStream with a policy mix.

    locust -f loadtest/locustfile.py --headless -u 8 -r 8 -t 60s --host 127.0.0.1:9000 \
        --policy-mix "small-only:3,rstitch:1" --max-new-tokens 64 --csv out/load

Each request is reported once (name = policy) with its full latency; extra rows report
time to first text (``ttft_ms``) and switches per request (``switches``).
"""

from __future__ import annotations

import random
import time

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel exists

import grpc  # noqa: E402
from locust import User, between, events, task  # noqa: E402

from relay_ray.client import build_request  # noqa: E402
from relay_ray.v1 import relay_pb2_grpc  # noqa: E402

PROMPTS = [f"So we add {i} and {3 * i + 7}, so the sum is {4 * i + 7}. Now compute" for i in range(100)]


def parse_mix(text: str) -> list[tuple[str, float]]:
    """``"small-only:3,rstitch:1"`` -> [("small-only", 3.0), ("rstitch", 1.0)]."""
    mix = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        mix.append((name, float(weight or 1)))
    if not mix or any(w <= 0 for _, w in mix):
        raise ValueError(f"bad --policy-mix {text!r}: use name:weight,name:weight")
    return mix


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--policy-mix", default="rstitch:1", help="policy:weight list", env_var="RELAY_POLICY_MIX")
    parser.add_argument("--max-new-tokens", type=int, default=64, env_var="RELAY_MAX_NEW_TOKENS")
    parser.add_argument("--app", default="", help="Serve application name (metadata)", env_var="RELAY_APP")


class RelayUser(User):
    host = "127.0.0.1:9000"
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.channel = grpc.insecure_channel(self.host)
        self.stub = relay_pb2_grpc.RelayServiceStub(self.channel)
        opts = self.environment.parsed_options
        self.mix = parse_mix(opts.policy_mix)
        self.max_new_tokens = opts.max_new_tokens
        self.metadata = (("application", opts.app),) if opts.app else ()

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def generate_stream(self) -> None:
        policy = random.choices([p for p, _ in self.mix], weights=[w for _, w in self.mix])[0]
        request = build_request(random.choice(PROMPTS), policy, max_new_tokens=self.max_new_tokens)
        fire = self.environment.events.request.fire
        started = time.perf_counter()
        ttft_ms, exc, tokens, switches = None, None, 0, 0
        try:
            for event in self.stub.GenerateStream(request, metadata=self.metadata, timeout=300):
                kind = event.WhichOneof("event")
                if kind == "delta" and ttft_ms is None:
                    ttft_ms = (time.perf_counter() - started) * 1000
                elif kind == "final":
                    tokens = len(event.final.token_ids)
                    switches = event.final.stats.num_switches
        except grpc.RpcError as err:
            exc = err
        elapsed_ms = (time.perf_counter() - started) * 1000
        fire(request_type="grpc", name=policy, response_time=elapsed_ms, response_length=tokens, exception=exc,
             context={})
        if exc is None:
            fire(request_type="metric", name="ttft_ms", response_time=ttft_ms or elapsed_ms, response_length=0,
                 exception=None, context={})
            fire(request_type="metric", name="switches", response_time=switches, response_length=0,
                 exception=None, context={})
