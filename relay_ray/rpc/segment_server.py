"""A standalone gRPC ``SegmentService`` server around one tier engine.

``relay-ray tier-server --model PATH --tier large --port 50051`` runs it; a controller
with ``transport: grpc`` (or any SegmentService client) uses it as a tier.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable

import grpc

from relay_ray.rpc import convert
from relay_ray.rpc.auth import RelayUnauthenticatedError
from relay_ray.rpc.status import is_bug, status_for
from relay_ray.v1 import segment_pb2_grpc as spb_grpc

logger = logging.getLogger(__name__)
# A segment job carries at most a context of token ids (a few hundred KiB for 32k tokens).
MAX_MESSAGE_BYTES = 16 << 20
MESSAGE_LIMITS = (("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                  ("grpc.max_send_message_length", MAX_MESSAGE_BYTES))


class SegmentServicer(spb_grpc.SegmentServiceServicer):
    """Serves a :class:`~relay_ray.engines.vllm_tier.VllmTierEngine`, or anything with its
    ``describe``/``prepare``/``stream_segment`` (a Serve tier replica serves itself this way)."""

    def __init__(self, engine, max_inflight_segments: int | None = None,
                 authorize: Callable[[Iterable[tuple[str, str]]], None] | None = None) -> None:
        self.engine = engine
        self.max_inflight_segments = max_inflight_segments
        self.inflight_segments = 0
        self._authorize = authorize

    async def _admit(self, context) -> None:
        """Only callers with the application's secret (the controllers) get an answer."""
        if self._authorize is not None:
            try:
                self._authorize(context.invocation_metadata() or ())
            except RelayUnauthenticatedError as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))

    async def Describe(self, request, context):
        await self._admit(context)
        return convert.tier_info_to_pb(self.engine.describe())

    async def Prepare(self, request, context):
        await self._admit(context)
        try:
            prepared = self.engine.prepare(convert.prompt_from_pb(request))
            if inspect.isawaitable(prepared):  # a Serve replica tokenizes off its event loop
                prepared = await prepared
            return convert.prepared_to_pb(prepared)
        except Exception as exc:
            await context.abort(*status_for(exc))

    async def RunSegment(self, request, context):
        from opentelemetry import context as otel_context
        from opentelemetry.propagate import extract

        await self._admit(context)
        try:
            job = convert.job_from_pb(request)
        except Exception as exc:
            await context.abort(*status_for(exc))
        if self.max_inflight_segments is not None and self.inflight_segments >= self.max_inflight_segments:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{self.inflight_segments} segments in flight: this replica is at its limit")
        self.inflight_segments += 1
        # Continue the caller's trace (W3C traceparent in the metadata), as Serve handles do.
        token = otel_context.attach(extract(dict(context.invocation_metadata() or ())))
        try:
            async for item in self.engine.stream_segment(job):
                yield convert.update_to_pb(item)
        except Exception as exc:  # a status for the controller, never a dead server
            code, message = status_for(exc, job.request_id)
            if is_bug(code):
                logger.exception("segment job %s/%d failed", job.request_id, job.segment_index)
            await context.abort(code, message)
        finally:
            self.inflight_segments -= 1
            otel_context.detach(token)


async def start_segment_server(engine, host: str = "127.0.0.1", port: int = 0,
                               max_inflight_segments: int | None = None,
                               authorize: Callable[[Iterable[tuple[str, str]]], None] | None = None,
                               ) -> tuple[grpc.aio.Server, int]:
    """Start serving ``engine``; returns the server and the bound port (``port=0`` picks one).

    No reflection: a tier port serves the relay's controllers, not explorers. ``authorize``
    checks every call's metadata (the application's secret)."""
    server = grpc.aio.server(options=list(MESSAGE_LIMITS))
    spb_grpc.add_SegmentServiceServicer_to_server(SegmentServicer(engine, max_inflight_segments, authorize), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound
