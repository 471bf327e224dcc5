"""How RelayService is registered on a gRPC server (Serve's proxy: ``grpc_servicer_functions``).

Like the generated ``add_RelayServiceServicer_to_server``, except that a request whose bytes
are not a ``GenerateRequest`` still reaches the handler (as :data:`UNDECODABLE`), which answers
INVALID_ARGUMENT. The generated deserializer raises inside the server, which reports UNKNOWN.
On Serve's proxy it also puts the admission gate in front (``admission_gate.py``).
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError

from relay_ray.rpc.admission_gate import gate_serve_proxy
from relay_ray.v1 import relay_pb2 as rpb

SERVICE = "relay_ray.v1.RelayService"
# request_id allows no control characters, so no client request can carry this marker.
UNDECODABLE_ID = "\x00undecodable"


def _tolerant_request(data: bytes) -> rpb.GenerateRequest:
    try:
        return rpb.GenerateRequest.FromString(data)
    except DecodeError:
        return rpb.GenerateRequest(request_id=UNDECODABLE_ID)


def add_RelayServiceServicer_to_server(servicer, server) -> None:  # noqa: N802 (gRPC's naming)
    gate_serve_proxy(server, SERVICE)  # on Serve's proxy only: refuse over-limit calls before routing
    handlers = {
        "Generate": grpc.unary_unary_rpc_method_handler(
            servicer.Generate, request_deserializer=_tolerant_request,
            response_serializer=rpb.GenerateResponse.SerializeToString),
        "GenerateStream": grpc.unary_stream_rpc_method_handler(
            servicer.GenerateStream, request_deserializer=_tolerant_request,
            response_serializer=rpb.GenerateStreamResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
