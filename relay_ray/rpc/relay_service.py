"""RelayService handlers shared by the Serve ingress and any plain gRPC server.

They take a gRPC-like context with ``set_code``/``set_details`` (grpc.aio's, or Serve's
``RayServegRPCContext``) and never raise for bad input: the client gets a status code and
the server keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from relay_ray.controller import RelayController, RelayResult
from relay_ray.rpc.convert import event_to_pb, request_from_pb, result_to_pb
from relay_ray.rpc.status import status_for
from relay_ray.v1 import relay_pb2 as rpb

logger = logging.getLogger(__name__)


def _fail(context, request_id: str, exc: BaseException) -> None:
    code, message = status_for(exc)
    if code.name == "INTERNAL":
        logger.exception("request %s failed", request_id, exc_info=exc)
    if context is not None:
        context.set_code(code)
        context.set_details(message)


async def generate(controller: RelayController, msg: rpb.GenerateRequest, default_policy: str,
                   context=None) -> rpb.GenerateResponse:
    """Unary Generate: run the relay to the end."""
    try:
        request = request_from_pb(msg, default_policy)
        async for event in controller.generate(request):
            if isinstance(event, RelayResult):
                return result_to_pb(event)
        raise RuntimeError("relay ended without a result")
    except Exception as exc:  # every failure becomes a status code, never a dead server
        _fail(context, msg.request_id, exc)
        return rpb.GenerateResponse(request_id=msg.request_id)


async def generate_stream(controller: RelayController, msg: rpb.GenerateRequest, default_policy: str,
                          context=None) -> AsyncIterator[rpb.GenerateStreamResponse]:
    """Streaming Generate: text deltas, one segment_end per segment, then the final response."""
    request_id = msg.request_id
    try:
        request = request_from_pb(msg, default_policy)
        request_id = request.request_id  # generated when the client sent none
        async for event in controller.generate(request, stream_text=True):
            yield event_to_pb(request_id, event)
    except Exception as exc:
        _fail(context, request_id, exc)
        # Serve's proxy applies a status only together with a message.
        yield rpb.GenerateStreamResponse(request_id=request_id)
