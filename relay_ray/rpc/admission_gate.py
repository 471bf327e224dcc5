"""Refuse calls over an application's admission limit in Serve's gRPC proxy, before routing.

Serve's own backpressure (the controller deployment's ``max_queued_requests``) refuses a call
only after the proxy has built a request, matched its route and asked its router: about 2 ms
of the proxy's CPU per refused call, on the proxy's one event loop. Under a flood on a busy
machine those milliseconds queue up and a refusal waits behind other refusals. The gate
counts the calls of each application in flight in this proxy and refuses one over the limit
at once with RESOURCE_EXHAUSTED, the status Serve would give.

The limit of an application is ``sum(max_ongoing_requests over its live controller
replicas) + max_queued_requests`` (Serve's own accounting: running per replica, queued per
proxy). Controller replicas announce their share in Ray's internal KV under
:data:`KV_PREFIX` and refresh it every :data:`HEARTBEAT_S`; the gate re-reads it at most once a
second and ignores announcements older than :data:`STALE_S` (a killed replica). Without a live
announcement it lets every call through to Serve's backpressure. The gate is an upper bound:
what it admits, Serve may still refuse (another proxy's calls share the running slots).

How the gate gets in: :func:`gate_serve_proxy` wraps Serve's ``service_handler_factory`` on
the proxy's gRPC server (``ray.serve._private.grpc_util.gRPCGenericServer``, Ray 2.60), which
our ``grpc_servicer_functions`` entry receives. ``RELAY_PROXY_ADMISSION_GATE=0`` turns it off.
The HTTP proxy (the OpenAI API) has the same gate: :mod:`relay_ray.rpc.http_admission`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass

import grpc

logger = logging.getLogger(__name__)
KV_PREFIX = "relay_ray/admission/"
KV_NAMESPACE = "relay_ray"
HEARTBEAT_S = 5.0
STALE_S = 20.0
REFRESH_S = 1.0
GATE_ENV = "RELAY_PROXY_ADMISSION_GATE"
REFUSAL = "the service is at its admission limit; retry with backoff"


def _key(app: str, replica_id: str) -> bytes:
    return f"{KV_PREFIX}{app}/{replica_id}".encode()


@dataclass(frozen=True)
class Announcement:
    """One controller replica's share of its application's admission limit."""

    app: str
    max_ongoing_requests: int
    max_queued_requests: int
    at_s: float

    def key(self, replica_id: str) -> bytes:
        return _key(self.app, replica_id)

    def value(self) -> bytes:
        return json.dumps({"app": self.app, "ongoing": self.max_ongoing_requests,
                           "queued": self.max_queued_requests, "at_s": self.at_s}).encode()

    @classmethod
    def parse(cls, raw: bytes) -> Announcement:
        d = json.loads(raw)
        return cls(str(d["app"]), int(d["ongoing"]), int(d["queued"]), float(d["at_s"]))


def limits_of(announcements: list[Announcement], now_s: float) -> dict[str, int]:
    """Each application's admission limit from its live announcements (pure)."""
    running: dict[str, int] = {}
    queued: dict[str, int] = {}
    for a in announcements:
        if now_s - a.at_s > STALE_S or a.max_queued_requests < 0:
            continue  # a dead replica, or an unbounded queue (Serve never refuses)
        running[a.app] = running.get(a.app, 0) + a.max_ongoing_requests
        queued[a.app] = max(queued.get(a.app, 0), a.max_queued_requests)
    return {app: running[app] + queued[app] for app in running}


class AdmissionCounter:
    """Calls in flight per application against a limit per application (pure, one event loop)."""

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}
        self.limits: dict[str, int] = {}

    def app_of(self, metadata) -> str | None:
        """The application a call names (Serve's ``application`` metadata), or the only one known."""
        for key, value in metadata or ():
            if key == "application":
                return value
        return next(iter(self.limits)) if len(self.limits) == 1 else None

    def try_enter(self, app: str | None) -> bool:
        if app is None:
            return True
        limit = self.limits.get(app)
        count = self.in_flight.get(app, 0)
        if limit is not None and count >= limit:
            return False
        self.in_flight[app] = count + 1
        return True

    def leave(self, app: str | None) -> None:
        if app is not None and self.in_flight.get(app, 0) > 0:
            self.in_flight[app] -= 1


def _read_announcements() -> list[Announcement]:
    from ray.experimental import internal_kv

    out = []
    for key in internal_kv._internal_kv_list(KV_PREFIX, namespace=KV_NAMESPACE):
        raw = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
        if raw:
            try:
                out.append(Announcement.parse(raw))
            except (ValueError, KeyError, TypeError):
                logger.warning("ignoring a malformed admission announcement under %r", key)
    return out


class ProxyGate:
    """The counter plus its limits, refreshed from the KV in a thread (never on the event loop)."""

    def __init__(self, read=_read_announcements, clock=time.time) -> None:
        self.counter = AdmissionCounter()
        self._read, self._clock = read, clock
        self._next_refresh_s = 0.0
        self._refreshing = False

    def _maybe_refresh(self) -> None:
        now = self._clock()
        if self._refreshing or now < self._next_refresh_s:
            return
        self._refreshing, self._next_refresh_s = True, now + REFRESH_S

        async def refresh() -> None:
            try:
                announcements = await asyncio.to_thread(self._read)
                self.counter.limits = limits_of(announcements, self._clock())
            except Exception:  # noqa: BLE001 (a KV hiccup must not fail calls: keep the old limits)
                logger.warning("admission limits not refreshed", exc_info=True)
            finally:
                self._refreshing = False

        asyncio.get_running_loop().create_task(refresh())

    def admit_app(self, app: str | None) -> bool:
        """Enter a call of ``app`` (None: unknown, always admitted); False if over its limit."""
        self._maybe_refresh()
        return self.counter.try_enter(app)

    def admit(self, context) -> tuple[bool, str | None]:
        app = self.counter.app_of(context.invocation_metadata())
        return self.admit_app(app), app

    def wrap(self, handler, streaming: bool):
        """``handler`` (Serve's unary-unary or unary-stream entry point) behind the gate."""
        if streaming:
            async def gated_stream(request, context):
                admitted, app = self.admit(context)
                if not admitted:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, REFUSAL)
                try:
                    async for message in handler(request, context):
                        yield message
                finally:
                    self.counter.leave(app)
            return gated_stream

        async def gated_unary(request, context):
            admitted, app = self.admit(context)
            if not admitted:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, REFUSAL)
            try:
                return await handler(request, context)
            finally:
                self.counter.leave(app)
        return gated_unary


def gate_serve_proxy(server, service: str) -> bool:
    """Put a :class:`ProxyGate` in front of ``service``'s unary calls on Serve's proxy server;
    False (and nothing changed) on any other server or when turned off."""
    factory = getattr(server, "service_handler_factory", None)
    if factory is None or getattr(factory, "relay_gate", None) is not None or os.environ.get(GATE_ENV, "1") == "0":
        return False
    from ray.serve._private.proxy_request_response import gRPCStreamingType

    gate = ProxyGate()
    prefix = f"/{service}/"

    def gated_factory(service_method: str, streaming_type):
        handler = factory(service_method=service_method, streaming_type=streaming_type)
        if not service_method.startswith(prefix):
            return handler
        if streaming_type == gRPCStreamingType.UNARY_UNARY:
            return gate.wrap(handler, streaming=False)
        if streaming_type == gRPCStreamingType.UNARY_STREAM:
            return gate.wrap(handler, streaming=True)
        return handler

    gated_factory.relay_gate = gate
    server.service_handler_factory = gated_factory
    return True


def announce(app: str, replica_id: str, max_ongoing_requests: int, max_queued_requests: int) -> None:
    """A controller replica's share of ``app``'s limit, for the proxies' gates (call every
    :data:`HEARTBEAT_S`)."""
    from ray.experimental import internal_kv

    a = Announcement(app, max_ongoing_requests, max_queued_requests, time.time())
    internal_kv._internal_kv_put(a.key(replica_id), a.value(), overwrite=True, namespace=KV_NAMESPACE)


def withdraw(app: str, replica_id: str) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(_key(app, replica_id), namespace=KV_NAMESPACE)


class Announcer:
    """A controller replica's announcement, refreshed every :data:`HEARTBEAT_S` by a daemon
    thread until :meth:`stop` (which withdraws it)."""

    def __init__(self, app: str, replica_id: str, max_ongoing_requests: int, max_queued_requests: int) -> None:
        import threading

        self._args = (app, replica_id, max_ongoing_requests, max_queued_requests)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay-admission-announcer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                announce(*self._args)
            except Exception:  # noqa: BLE001 (the gate then falls back to Serve's backpressure)
                logger.warning("admission announcement failed", exc_info=True)
            self._stopped.wait(HEARTBEAT_S)

    def stop(self) -> None:
        self._stopped.set()
        try:
            withdraw(*self._args[:2])
        except Exception:  # noqa: BLE001 (stale announcements expire after STALE_S)
            logger.warning("admission announcement not withdrawn", exc_info=True)
