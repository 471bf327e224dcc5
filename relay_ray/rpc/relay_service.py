"""RelayService handlers shared by the Serve ingress and any plain gRPC server.

They take a gRPC-like context with ``set_code``/``set_details`` (grpc.aio's, or Serve's
``RayServegRPCContext``) and never raise for bad input: the client gets a status code and
the server keeps serving.

Deadlines: a plain gRPC server knows the client's deadline (``context.time_remaining()``);
Serve's gRPC proxy does not pass it on, so clients also send the time left in the
``relay-timeout-ms`` metadata (``RelayClient`` does). The controller bounds every segment
job by it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from relay_ray.controller import RelayController
from relay_ray.rpc.auth import TokenAuthenticator
from relay_ray.rpc.convert import event_to_pb, request_from_pb, result_to_pb, resume_from_pb
from relay_ray.rpc.status import is_bug, status_for
from relay_ray.v1 import relay_pb2 as rpb

logger = logging.getLogger(__name__)
TIMEOUT_METADATA = "relay-timeout-ms"


def timeout_s(context) -> float | None:
    """Seconds the client gives this call, from its deadline or the metadata; None: no limit."""
    if context is None:
        return None
    remaining = getattr(context, "time_remaining", None)
    left = remaining() if callable(remaining) else None
    for key, value in context.invocation_metadata() or ():
        if key == TIMEOUT_METADATA:
            try:
                sent = float(value) / 1000.0
            except ValueError:
                continue
            left = sent if left is None else min(left, sent)
    return left


class RelayStatusError(Exception):
    """Raised by a handler after setting the status on its context. Serve's replica then
    carries that status (not INTERNAL) to the client, with no empty message on the stream."""


def _fail(context, request_id: str, exc: BaseException) -> RelayStatusError:
    code, message = status_for(exc, request_id)
    if is_bug(code):
        logger.exception("request %s failed", request_id, exc_info=exc)
    else:
        logger.warning("request %s: %s (%s)", request_id, code.name, exc)
    if context is not None:
        context.set_code(code)
        context.set_details(message)
    return RelayStatusError(message)


def _authenticate(authenticator: TokenAuthenticator | None, context) -> None:
    if authenticator is not None:
        authenticator.check(context.invocation_metadata() if context is not None else ())


async def generate(controller: RelayController, msg: rpb.GenerateRequest, default_policy: str,
                   context=None, authenticator: TokenAuthenticator | None = None) -> rpb.GenerateResponse:
    """Unary Generate: run the relay to the end."""
    request_id = msg.request_id
    try:
        _authenticate(authenticator, context)
        request = request_from_pb(msg, default_policy)
        request_id = request.request_id
        return result_to_pb(await controller.run(request, timeout_s=timeout_s(context)))
    except Exception as exc:  # every failure becomes a status code, never a dead server
        raise _fail(context, request_id, exc) from None


async def generate_stream(controller: RelayController, msg: rpb.GenerateRequest, default_policy: str,
                          context=None, authenticator: TokenAuthenticator | None = None,
                          ) -> AsyncIterator[rpb.GenerateStreamResponse]:
    """Streaming Generate: text deltas, one segment_end per segment, then the final response."""
    request_id = msg.request_id
    try:
        _authenticate(authenticator, context)
        request = request_from_pb(msg, default_policy)
        request_id = request.request_id  # generated when the client sent none
        resume = resume_from_pb(msg)
        async for event in controller.generate(request, stream_text=True, timeout_s=timeout_s(context),
                                               resume=resume):
            yield event_to_pb(request_id, event)
    except Exception as exc:
        raise _fail(context, request_id, exc) from None
