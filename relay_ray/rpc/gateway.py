"""A TLS gateway in front of Serve's gRPC proxy.

Ray Serve 2.60's gRPC proxy serves plaintext only and binds every interface. The gateway is
the public endpoint: it terminates TLS and forwards RelayService calls, as raw bytes with
their metadata (``authorization``, ``application``, deadline, ``traceparent``), to Serve's
port, which stays private (loopback, or a port that only the cluster network reaches).
Statuses come back unchanged; a client that goes away cancels the upstream call.

    relay-ray gateway --listen 0.0.0.0:9443 --upstream 127.0.0.1:9000 \\
        --tls-cert server.pem --tls-key server.key
"""

from __future__ import annotations

import grpc

from relay_ray.rpc.relay_service import TIMEOUT_METADATA
from relay_ray.rpc.segment_server import MESSAGE_LIMITS

SERVICE = "relay_ray.v1.RelayService"
# Metadata that grpc itself manages must not be copied onto the upstream call.
_RESERVED = ("grpc-", ":", "user-agent", "content-type", "te")


def _forwarded(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    meta = tuple((k, v) for k, v in context.invocation_metadata() or () if not k.startswith(_RESERVED))
    left = context.time_remaining()
    if left is not None and not any(k == TIMEOUT_METADATA for k, _ in meta):
        meta += ((TIMEOUT_METADATA, str(int(left * 1000))),)
    return meta


def _identity(data: bytes) -> bytes:
    return data


class Gateway:
    """Forwards RelayService to ``upstream`` (create and use inside one event loop)."""

    def __init__(self, upstream: str) -> None:
        self.channel = grpc.aio.insecure_channel(upstream, options=list(MESSAGE_LIMITS))
        self._generate = self.channel.unary_unary(f"/{SERVICE}/Generate", _identity, _identity)
        self._stream = self.channel.unary_stream(f"/{SERVICE}/GenerateStream", _identity, _identity)

    async def generate(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return await self._generate(request, metadata=_forwarded(context), timeout=context.time_remaining())
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")

    async def generate_stream(self, request: bytes, context: grpc.aio.ServicerContext):
        call = self._stream(request, metadata=_forwarded(context), timeout=context.time_remaining())
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        finally:
            call.cancel()  # no-op once finished; stops the relay if our client went away

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Generate": grpc.unary_unary_rpc_method_handler(self.generate, _identity, _identity),
            "GenerateStream": grpc.unary_stream_rpc_method_handler(self.generate_stream, _identity, _identity),
        })


async def start_gateway(listen: str, upstream: str, cert_pem: bytes, key_pem: bytes) -> tuple[grpc.aio.Server, int]:
    """Serve the gateway with TLS on ``listen`` (host:port, port 0 picks one); returns the
    server and its port."""
    server = grpc.aio.server(options=list(MESSAGE_LIMITS))
    server.add_generic_rpc_handlers((Gateway(upstream).handler(),))
    credentials = grpc.ssl_server_credentials([(key_pem, cert_pem)])
    port = server.add_secure_port(listen, credentials)
    await server.start()
    return server, port
