"""The admission gate on Serve's HTTP proxy (the OpenAI API): refuse over-limit requests before routing.

The same gate as on the gRPC proxy (:mod:`relay_ray.rpc.admission_gate`: limits announced by
the controller replicas, counted per application in this proxy), in front of Serve's HTTP
proxy as an ASGI middleware. A request over its application's limit gets at once what Serve's
backpressure would give it after routing (429 with ``Retry-After: 1``, the builder's
``backpressure_config``), with an OpenAI error body the ``openai`` SDK reads and retries.
Measured (docs/reliability.md, "The OpenAI HTTP API under a flood"): under a flood of 10x the
limit it answers most refusals and shortens their tail (p95 10-44 ms against 27-142 ms without
it); the admitted requests' latency did not change beyond the runs' noise.

How it gets in: Serve applies the middlewares returned by the function named in
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` to its HTTP proxy; :func:`proxy_gate_env` names
:func:`proxy_middlewares`. Ray reads it when a proxy starts, so it must be in the environment
of the processes that start Ray (as ``relay-ray serve`` and the KubeRay manifests set it).
The application of a request is the one Serve's own router matches for its path
(``ray.serve._private.proxy.HTTPProxy.proxy_router``, Ray 2.60); a request it cannot place
(no route, another proxy layout) passes through untouched. ``RELAY_PROXY_ADMISSION_GATE=0``
turns it off.
"""

from __future__ import annotations

import os

from relay_ray.rpc.admission_gate import GATE_ENV, ProxyGate
from relay_ray.rpc.openai_errors import overloaded

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
_REFUSAL = overloaded()  # Retry-After 1, as the builder's backpressure_config tells Serve to answer
_BODY = _REFUSAL.body().model_dump_json().encode()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode()),
            *((k.encode(), v.encode()) for k, v in _REFUSAL.headers().items())]


def proxy_gate_env() -> dict[str, str]:
    """The environment that puts :class:`HttpAdmissionGate` on every Serve HTTP proxy."""
    return {CALLBACK_ENV: f"{__name__}:proxy_middlewares"}


def proxy_middlewares() -> list:
    """Serve's HTTP proxy callback: the gate, unless ``RELAY_PROXY_ADMISSION_GATE=0``."""
    from starlette.middleware import Middleware

    if os.environ.get(GATE_ENV, "1") == "0":
        return []
    return [Middleware(HttpAdmissionGate)]


def _route_app(router, path: str) -> str | None:
    """The application Serve's proxy router sends ``path`` to, or None."""
    try:
        matched = router.match_route(path)
        return router.route_info[matched[0]].app_name if matched else None
    except (AttributeError, KeyError, TypeError, IndexError):
        return None


class HttpAdmissionGate:
    """Pure ASGI middleware: count each application's requests in flight; refuse over its limit.

    ``app`` is what Serve wraps (its request-id middleware around the HTTP proxy); the proxy's
    router is looked up through it on each request, so routes added later are seen.
    """

    def __init__(self, app, gate: ProxyGate | None = None, app_of=None) -> None:
        self.app = app
        self.gate = gate or ProxyGate()
        self._app_of = app_of or self._serve_app_of

    def _serve_app_of(self, path: str) -> str | None:
        inner = getattr(self.app, "_app", self.app)  # Serve's RequestIdMiddleware keeps the proxy here
        router = getattr(inner, "proxy_router", None)
        return _route_app(router, path) if router is not None else None

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        app_name = self._app_of(scope.get("path", ""))
        if not self.gate.admit_app(app_name):
            await send({"type": "http.response.start", "status": _REFUSAL.status, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": _BODY})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.counter.leave(app_name)
