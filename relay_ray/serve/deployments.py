"""Ray Serve deployment classes: thin shells around the tier engine and the controller.

Options (replicas, resources, routing) are set by :mod:`relay_ray.serve.builder`.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace

from ray import serve

from relay_ray.autoscale.policy import INFLIGHT_METRIC, TOKENS_METRIC
from relay_ray.autoscale.rates import SlidingRate
from relay_ray.config import AuthConfig, ControllerConfig, TierConfig
from relay_ray.controller.limits import check_job
from relay_ray.controller import ControllerLimits, RelayController, RelayResult
from relay_ray.controller.attempts import RetryPolicy
from relay_ray.controller.resume import ResumeCodec
from relay_ray.transport.direct_client import DirectTierClient
from relay_ray.transport.grpc_client import GrpcTierClient
from relay_ray.transport.handle_client import HandleTierClient
from relay_ray.engines.vllm_tier import VllmTierEngine
from relay_ray.rpc import relay_service
from relay_ray.rpc.admission_gate import Announcer
from relay_ray.rpc.auth import TierSecret, TokenAuthenticator
from relay_ray.rpc.openai_http import OpenAIEdge
from relay_ray.telemetry.metrics import RayMetrics
from relay_ray.telemetry.observer import TelemetryObserver
from relay_ray.types import PreparedPrompt, PromptInput, RelayRequest, SegmentJob, SegmentResult, Tier, TierInfo


# Tier deployments get graceful_shutdown_timeout_s = 30 (builder): direct segments still in
# flight after this long are cancelled and migrated, before Serve force-stops the replica.
DRAIN_GRACE_S = 20.0


class TierServer:
    """One replica of a tier: owns one vLLM engine and runs segment jobs on it."""

    async def __init__(self, tier: str, config: dict, app_secret: str = "") -> None:
        # vLLM's logging.config.dictConfig would close Serve's log handlers in this process
        # (Serve's replica health calls then fail on a closed MemoryHandler).
        os.environ["VLLM_CONFIGURE_LOGGING"] = "0"
        context = serve.get_replica_context()
        rank = getattr(context.rank, "rank", context.rank) or 0
        tier_config = TierConfig.model_validate(config).for_replica(int(rank))
        self.engine = VllmTierEngine(Tier(tier), tier_config, context.replica_id.unique_id)
        self.input_limits = tier_config.input_limits
        self.tier_secret = TierSecret(app_secret)
        await self.engine.start()
        self._inflight = 0
        self._jobs: set[str] = set()
        self._decoded = SlidingRate(window_s=10.0)
        self.endpoint = await self._serve_direct(tier_config.max_direct_segments or tier_config.max_ongoing_requests)

    async def _serve_direct(self, max_segments: int) -> str:
        """Also serve SegmentService on this node's IP (transport 'direct': a controller
        reaches this replica without a Serve handle once it knows the endpoint)."""
        from ray.util import get_node_ip_address

        from relay_ray.rpc.segment_server import start_segment_server

        host = get_node_ip_address()
        self._grpc_server, port = await start_segment_server(self, host, 0, max_segments,
                                                             authorize=self.tier_secret.check)
        return f"{host}:{port}"

    def engine_load(self) -> dict:
        """Requests the engine has not finished (KV sessions included) and segment jobs in flight,
        with their ids, and KV sessions held (tests, debugging)."""
        processor = self.engine.engine.output_processor
        sessions = self.engine.sessions
        return {"unfinished_requests": processor.get_num_unfinished_requests(), "segments": self._inflight,
                "request_ids": sorted(processor.request_states)[:20], "jobs": sorted(self._jobs)[:20],
                "kv_sessions": len(sessions) if sessions is not None else 0}

    async def reset_prefix_cache(self) -> bool:
        """Empty the engine's prefix cache (measurements that must not find another request's
        blocks); False if the engine refused (requests running)."""
        return bool(await self.engine.engine.reset_prefix_cache())

    def _finished(self, job: SegmentJob, result: SegmentResult) -> None:
        if job.prefill_only:
            return
        self._decoded.add(len(result.token_ids) + result.num_dropped_tokens)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom autoscaling metrics (see relay_ray.autoscale.serve_policy)."""
        return {INFLIGHT_METRIC: float(self._inflight), TOKENS_METRIC: self._decoded.per_second()}

    def describe(self) -> TierInfo:
        return self.engine.describe()

    async def prepare(self, prompt: PromptInput) -> PreparedPrompt:
        # Tokenizing a long prompt takes a while: off the event loop that streams segments.
        return await asyncio.to_thread(self.engine.prepare, prompt)

    async def run_segment(self, job: SegmentJob) -> SegmentResult:
        async for item in self.stream_segment(job):
            if isinstance(item, SegmentResult):
                return item
        raise RuntimeError("segment ended without a result")

    async def stream_segment(self, job: SegmentJob):
        from opentelemetry import trace

        check_job(job, self.engine.describe(), self.input_limits)  # the controller checked it; so do we
        self._inflight += 1
        key = f"{job.request_id}/{job.segment_index}{'/warm' if job.prefill_only else ''}"
        self._jobs.add(key)
        kind = "tier.prefill_ahead" if job.prefill_only else "tier.segment"
        span_name = f"{kind} {self.engine.tier.value}"
        try:
            with trace.get_tracer("relay_ray").start_as_current_span(span_name) as span:
                async for item in self.engine.stream_segment(job):
                    if isinstance(item, SegmentResult):
                        item = replace(item, endpoint=self.endpoint)
                        self._finished(job, item)
                        span.set_attributes({"relay.replica": item.replica_id, "relay.new_tokens": len(item.token_ids),
                                             "relay.cached_prefix_tokens": item.num_cached_tokens})
                    yield item
        finally:
            self._inflight -= 1
            self._jobs.discard(key)

    async def check_health(self) -> None:
        """Serve restarts the replica when this raises (engine process died, ...)."""
        await self.engine.check_health()

    async def __del__(self) -> None:
        """Graceful stop (Serve calls this after its handle requests drained): refuse new
        direct segments (controllers then route through Serve, to other replicas), let the
        ones in flight finish within the grace period (the rest are cancelled, and their
        controllers re-run them elsewhere), then stop the engine."""
        server = getattr(self, "_grpc_server", None)
        if server is not None:
            await server.stop(grace=DRAIN_GRACE_S)
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


class RelayIngress:
    """The controller deployment: RelayService on Serve's gRPC proxy, the OpenAI API on its HTTP proxy.

    Stateless between requests, so it scales to any number of replicas.
    """

    def __init__(self, large, small, config: dict, migration_limits: dict[str, int], app_secret: str,
                 auth: dict | None = None) -> None:
        cfg = ControllerConfig.model_validate(config)
        auth_cfg = AuthConfig.model_validate(auth or {})
        self.authenticator = TokenAuthenticator(auth_cfg.tokens_file, auth_cfg.tokens_env)
        if cfg.transport == "grpc":
            secret = TierSecret(os.environ.get(cfg.tier_secret_env, "") if cfg.tier_secret_env else "")
            tiers = {Tier.LARGE: GrpcTierClient(cfg.large_endpoints, secret=secret),
                     Tier.SMALL: GrpcTierClient(cfg.small_endpoints, secret=secret)}
        elif cfg.transport == "direct":
            secret = TierSecret(app_secret)
            tiers = {Tier.LARGE: DirectTierClient(HandleTierClient(large), secret=secret),
                     Tier.SMALL: DirectTierClient(HandleTierClient(small), secret=secret)}
        else:
            tiers = {Tier.LARGE: HandleTierClient(large), Tier.SMALL: HandleTierClient(small)}
        retry = {tier: RetryPolicy(migration_limit=migration_limits[tier.value], backoff_s=cfg.migration_backoff_s,
                                   stall_timeout_s=cfg.segment_stall_timeout_s) for tier in Tier}
        limits = ControllerLimits(max_new_tokens=cfg.max_new_tokens_limit, input=cfg.input_limits,
                                  stream_interval_tokens=cfg.stream_interval_tokens,
                                  prefill_ahead=cfg.prefill_ahead,
                                  prefill_ahead_tiers=frozenset(cfg.prefill_ahead_tiers),
                                  prefill_ahead_hide_probability=cfg.prefill_ahead_hide_probability,
                                  kv_session_tiers=frozenset(cfg.kv_session_tiers),
                                  feed_interval_tokens=cfg.feed_interval_tokens, retry=retry)
        self.telemetry = TelemetryObserver(RayMetrics(serve.get_replica_context().app_name))
        self.controller = RelayController(tiers, limits, observer=self.telemetry,
                                          resume_codec=ResumeCodec(app_secret.encode()))
        self.default_policy = cfg.default_policy
        self.openai = OpenAIEdge(self.controller, cfg.default_policy, self.authenticator)
        replica = serve.get_replica_context()  # the proxies' admission gates read this share
        self.announcer = Announcer(replica.app_name, replica.replica_id.unique_id, cfg.max_ongoing_requests,
                                   cfg.max_queued_requests)

    def __del__(self) -> None:
        announcer = getattr(self, "announcer", None)
        if announcer is not None:
            announcer.stop()

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Switch-rate telemetry: tokens demanded per tier and switches, per second."""
        self.telemetry.publish_rates()
        return self.telemetry.rates()

    async def Generate(self, request, grpc_context=None):
        return await relay_service.generate(self.controller, request, self.default_policy, grpc_context,
                                            self.authenticator)

    async def GenerateStream(self, request, grpc_context=None):
        async for message in relay_service.generate_stream(
            self.controller, request, self.default_policy, grpc_context, self.authenticator
        ):
            yield message

    async def __call__(self, request):
        """Every HTTP request on Serve's HTTP proxy: the OpenAI-compatible API."""
        return await self.openai.handle(request)

    async def relay(self, request: RelayRequest, timeout_s: float | None = None) -> RelayResult:
        """Python entry point for handle callers (tests, batch jobs)."""
        return await self.controller.run(request, timeout_s=timeout_s)
