"""Ray Serve deployment classes: thin shells around the tier engine and the controller.

Options (replicas, resources, routing) are set by :mod:`relay_ray.serve.builder`.
"""

from __future__ import annotations

import os
from dataclasses import replace

from ray import serve

from relay_ray.autoscale.policy import INFLIGHT_METRIC, TOKENS_METRIC
from relay_ray.autoscale.rates import SlidingRate
from relay_ray.config import ControllerConfig, TierConfig
from relay_ray.controller import ControllerLimits, RelayController, RelayResult
from relay_ray.engines.direct_client import DirectTierClient
from relay_ray.engines.grpc_client import GrpcTierClient
from relay_ray.engines.handle_client import HandleTierClient
from relay_ray.engines.vllm_tier import VllmTierEngine
from relay_ray.rpc import relay_service
from relay_ray.rpc.openai_http import OpenAIEdge
from relay_ray.telemetry.metrics import RayMetrics
from relay_ray.telemetry.observer import TelemetryObserver
from relay_ray.types import PreparedPrompt, PromptInput, RelayRequest, SegmentJob, SegmentResult, Tier, TierInfo


class TierServer:
    """One replica of a tier: owns one vLLM engine and runs segment jobs on it."""

    async def __init__(self, tier: str, config: dict) -> None:
        # vLLM's logging.config.dictConfig would close Serve's log handlers in this process
        # (Serve's replica health calls then fail on a closed MemoryHandler).
        os.environ["VLLM_CONFIGURE_LOGGING"] = "0"
        context = serve.get_replica_context()
        rank = getattr(context.rank, "rank", context.rank) or 0
        tier_config = TierConfig.model_validate(config).for_replica(int(rank))
        self.engine = VllmTierEngine(Tier(tier), tier_config, context.replica_id.unique_id)
        await self.engine.start()
        self._inflight = 0
        self._decoded = SlidingRate(window_s=10.0)
        self.endpoint = await self._serve_direct()

    async def _serve_direct(self) -> str:
        """Also serve SegmentService on this node's IP (transport 'direct': a controller
        reaches this replica without a Serve handle once it knows the endpoint)."""
        from ray.util import get_node_ip_address

        from relay_ray.rpc.segment_server import start_segment_server

        host = get_node_ip_address()
        self._grpc_server, port = await start_segment_server(self, host, 0)
        return f"{host}:{port}"

    def _finished(self, job: SegmentJob, result: SegmentResult) -> None:
        if job.prefill_only:
            return
        self._decoded.add(len(result.token_ids) + result.num_dropped_tokens)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom autoscaling metrics (see relay_ray.autoscale.serve_policy)."""
        return {INFLIGHT_METRIC: float(self._inflight), TOKENS_METRIC: self._decoded.per_second()}

    def describe(self) -> TierInfo:
        return self.engine.describe()

    def prepare(self, prompt: PromptInput) -> PreparedPrompt:
        return self.engine.prepare(prompt)

    async def run_segment(self, job: SegmentJob) -> SegmentResult:
        async for item in self.stream_segment(job):
            if isinstance(item, SegmentResult):
                return item
        raise RuntimeError("segment ended without a result")

    async def stream_segment(self, job: SegmentJob):
        from opentelemetry import trace

        self._inflight += 1
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

    async def check_health(self) -> None:
        """Serve restarts the replica when this raises (engine process died, ...)."""
        await self.engine.check_health()

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


class RelayIngress:
    """The controller deployment: RelayService on Serve's gRPC proxy, the OpenAI API on its HTTP proxy.

    Stateless between requests, so it scales to any number of replicas.
    """

    def __init__(self, large, small, config: dict) -> None:
        cfg = ControllerConfig.model_validate(config)
        if cfg.transport == "grpc":
            tiers = {Tier.LARGE: GrpcTierClient(cfg.large_endpoints), Tier.SMALL: GrpcTierClient(cfg.small_endpoints)}
        elif cfg.transport == "direct":
            tiers = {Tier.LARGE: DirectTierClient(HandleTierClient(large)),
                     Tier.SMALL: DirectTierClient(HandleTierClient(small))}
        else:
            tiers = {Tier.LARGE: HandleTierClient(large), Tier.SMALL: HandleTierClient(small)}
        limits = ControllerLimits(max_new_tokens=cfg.max_new_tokens_limit,
                                  stream_interval_tokens=cfg.stream_interval_tokens,
                                  prefill_ahead=cfg.prefill_ahead,
                                  prefill_ahead_tiers=frozenset(cfg.prefill_ahead_tiers))
        self.telemetry = TelemetryObserver(RayMetrics())
        self.controller = RelayController(tiers, limits, observer=self.telemetry)
        self.default_policy = cfg.default_policy
        self.openai = OpenAIEdge(self.controller, cfg.default_policy)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Switch-rate telemetry: tokens demanded per tier and switches, per second."""
        self.telemetry.publish_rates()
        return self.telemetry.rates()

    async def Generate(self, request, grpc_context=None):
        return await relay_service.generate(self.controller, request, self.default_policy, grpc_context)

    async def GenerateStream(self, request, grpc_context=None):
        async for message in relay_service.generate_stream(
            self.controller, request, self.default_policy, grpc_context
        ):
            yield message

    async def __call__(self, request):
        """Every HTTP request on Serve's HTTP proxy: the OpenAI-compatible API."""
        return await self.openai.handle(request)

    async def relay(self, request: RelayRequest) -> RelayResult:
        """Python entry point for handle callers (tests, batch jobs)."""
        async for event in self.controller.generate(request):
            if isinstance(event, RelayResult):
                return event
        raise RuntimeError("relay ended without a result")
