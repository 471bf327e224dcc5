"""Locust gRPC user for relay_ray: drives RelayService.GenerateStream with a policy mix.

    locust -f loadtest/locustfile.py --headless -u 8 -r 8 -t 60s --host 127.0.0.1:9000 \
        --policy-mix "small-only:3,rstitch:1" --max-new-tokens 64 --csv out/load \
        --requests-csv out/load_requests.csv

Each request is reported to Locust once (name = policy) with its full latency, so Locust's
own statistics (console, ``--csv``) count real requests only. The relay's own figures (time
to first text, switches, tokens and prefill tokens per tier) travel in the request event's
``context``: they are written one row per request to ``--requests-csv`` and summarised at
the end of the run. ``loadtest/stepload.py`` adds a step-load shape (``relay-ray plan``).
"""

from __future__ import annotations

import csv
import json
import os
import random
import statistics
import time

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel exists

import grpc  # noqa: E402
from locust import User, between, events, task  # noqa: E402

from relay_ray.client import build_request  # noqa: E402
from relay_ray.types import Sampling  # noqa: E402
from relay_ray.v1 import common_pb2  # noqa: E402
from relay_ray.v1 import relay_pb2_grpc  # noqa: E402

PROMPTS = [f"So we add {i} and {3 * i + 7}, so the sum is {4 * i + 7}. Now compute" for i in range(100)]
REQUEST_TYPE = "grpc"
# One row per request in --requests-csv (relay_ray.deploy.loadrun reads them).
REQUEST_FIELDS = (
    "start_s", "end_s", "users", "policy", "ok", "error", "latency_ms", "ttft_ms", "tokens",
    "large_tokens", "small_tokens", "large_generated", "small_generated", "switches", "segments",
    "large_prefill_tokens", "small_prefill_tokens",
)


def parse_mix(text: str) -> list[tuple[str, float]]:
    """``"small-only:3,rstitch:1"`` -> [("small-only", 3.0), ("rstitch", 1.0)]."""
    mix = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        mix.append((name, float(weight or 1)))
    if not mix or any(w <= 0 for _, w in mix):
        raise ValueError(f"bad --policy-mix {text!r}: use name:weight,name:weight")
    return mix


def request_figures(final) -> dict:
    """The relay's per-request figures from the final GenerateResponse."""
    prefill = {common_pb2.TIER_LARGE: 0, common_pb2.TIER_SMALL: 0}
    for seg in final.segments:
        prefill[seg.tier] = prefill.get(seg.tier, 0) + max(seg.num_prompt_tokens - seg.num_cached_tokens, 0)
    s = final.stats
    return {"tokens": len(final.token_ids), "large_tokens": s.large_tokens, "small_tokens": s.small_tokens,
            "large_generated": s.large_generated_tokens, "small_generated": s.small_generated_tokens,
            "switches": s.num_switches, "segments": s.num_segments,
            "large_prefill_tokens": prefill[common_pb2.TIER_LARGE],
            "small_prefill_tokens": prefill[common_pb2.TIER_SMALL]}


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--policy-mix", default="rstitch:1", help="policy:weight list", env_var="RELAY_POLICY_MIX")
    parser.add_argument("--policy-params", default="{}", env_var="RELAY_POLICY_PARAMS",
                        help='JSON: parameters per policy, e.g. {"fixed-ratio": {"large_tokens": 8}}')
    parser.add_argument("--max-new-tokens", type=int, default=64, env_var="RELAY_MAX_NEW_TOKENS")
    parser.add_argument("--ignore-eos", action="store_true", env_var="RELAY_IGNORE_EOS",
                        help="every request writes exactly --max-new-tokens tokens")
    parser.add_argument("--app", default="", help="Serve application name (metadata)", env_var="RELAY_APP")
    parser.add_argument("--token-env", default="", env_var="RELAY_TOKEN_ENV",
                        help="environment variable holding the bearer token (relays with auth on)")
    parser.add_argument("--requests-csv", default="", env_var="RELAY_REQUESTS_CSV",
                        help="write one row per request (the relay's figures) here")


class _RequestLog:
    """Per-request rows (--requests-csv) and the end-of-run summary of the relay's figures."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.file = None
        self.writer = None

    def open(self, path: str) -> None:
        if path:
            self.file = open(path, "w", newline="")
            self.writer = csv.DictWriter(self.file, fieldnames=REQUEST_FIELDS)
            self.writer.writeheader()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if self.writer is not None:
            self.writer.writerow({k: row.get(k, "") for k in REQUEST_FIELDS})
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def summary(self) -> str:
        ok = [r for r in self.rows if r["ok"]]
        if not ok:
            return "relay figures: no successful request"

        def pct(values: list[float], q: float) -> float:
            values = sorted(values)
            return values[min(len(values) - 1, int(q * len(values)))]

        ttft = [r["ttft_ms"] for r in ok]
        lines = [f"relay figures over {len(ok)} successful requests ({len(self.rows) - len(ok)} failed):",
                 f"  time to first text: p50 {pct(ttft, 0.5):.0f} ms, p95 {pct(ttft, 0.95):.0f} ms"]
        for policy in sorted({r["policy"] for r in ok}):
            rows = [r for r in ok if r["policy"] == policy]
            mean = lambda key: statistics.fmean(r[key] for r in rows)  # noqa: E731
            lines.append(f"  {policy}: {len(rows)} requests; per request: switches {mean('switches'):.2f}, "
                         f"large tokens {mean('large_tokens'):.1f}, small tokens {mean('small_tokens'):.1f}, "
                         f"prefill large {mean('large_prefill_tokens'):.1f} / small {mean('small_prefill_tokens'):.1f}")
        return "\n".join(lines)


LOG = _RequestLog()


@events.test_start.add_listener
def _on_start(environment, **kwargs) -> None:
    LOG.open(getattr(environment.parsed_options, "requests_csv", ""))


@events.request.add_listener
def _on_request(request_type, name, response_time, response_length, exception, context, **kwargs) -> None:
    if request_type == REQUEST_TYPE and context:
        LOG.add({**context, "latency_ms": response_time, "ok": exception is None,
                 "error": "" if exception is None else str(getattr(exception, "code", lambda: exception)())})


@events.quitting.add_listener
def _on_quit(environment, **kwargs) -> None:
    LOG.close()
    print(LOG.summary(), flush=True)


class RelayUser(User):
    host = "127.0.0.1:9000"
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.channel = grpc.insecure_channel(self.host)
        self.stub = relay_pb2_grpc.RelayServiceStub(self.channel)
        opts = self.environment.parsed_options
        self.mix = parse_mix(opts.policy_mix)
        self.params = json.loads(opts.policy_params or "{}")
        self.sampling = Sampling(ignore_eos=bool(opts.ignore_eos))
        self.max_new_tokens = opts.max_new_tokens
        self.metadata = (("application", opts.app),) if opts.app else ()
        token = os.environ.get(opts.token_env, "") if opts.token_env else ""
        if token:
            self.metadata += (("authorization", f"Bearer {token}"),)

    def on_stop(self) -> None:
        self.channel.close()

    @task
    def generate_stream(self) -> None:
        policy = random.choices([p for p, _ in self.mix], weights=[w for _, w in self.mix])[0]
        request = build_request(random.choice(PROMPTS), policy, self.params.get(policy), self.sampling,
                                max_new_tokens=self.max_new_tokens)
        users = self.environment.runner.user_count if self.environment.runner else 0
        started_s, started = time.time(), time.perf_counter()
        ttft_ms, exc, figures = None, None, {}
        try:
            for event in self.stub.GenerateStream(request, metadata=self.metadata, timeout=300):
                kind = event.WhichOneof("event")
                if kind == "delta" and ttft_ms is None:
                    ttft_ms = (time.perf_counter() - started) * 1000
                elif kind == "final":
                    figures = request_figures(event.final)
        except grpc.RpcError as err:
            exc = err
        elapsed_ms = (time.perf_counter() - started) * 1000
        context = {"start_s": started_s, "end_s": time.time(), "users": users, "policy": policy,
                   "ttft_ms": ttft_ms if ttft_ms is not None else elapsed_ms, **figures}
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE, name=policy, response_time=elapsed_ms,
            response_length=figures.get("tokens", 0), exception=exc, context=context)
