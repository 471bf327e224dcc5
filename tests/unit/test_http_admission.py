"""The admission gate on Serve's HTTP proxy (relay_ray/rpc/http_admission.py) without Ray: an
ASGI middleware that refuses over-limit requests with the 429 the OpenAI SDK retries, without
calling the proxy, and finds each request's application the way Serve's router does."""

from __future__ import annotations

import asyncio
import importlib
import json
from types import SimpleNamespace

from relay_ray.rpc.admission_gate import GATE_ENV, Announcement, ProxyGate
from relay_ray.rpc.http_admission import CALLBACK_ENV, HttpAdmissionGate, proxy_gate_env, proxy_middlewares


class _Router:
    """The two parts of Serve's ProxyRouter the gate uses: longest-prefix match, route -> app."""

    def __init__(self, routes: dict[str, str]) -> None:
        self.route_info = {prefix: SimpleNamespace(app_name=app) for prefix, app in routes.items()}

    def match_route(self, path: str):
        for prefix in sorted(self.route_info, key=len, reverse=True):
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return prefix, object(), False
        return None


class _Proxy:
    """Serve's HTTP proxy behind its request-id middleware: answers after ``release``."""

    def __init__(self, routes: dict[str, str]) -> None:
        self.proxy_router = _Router(routes)
        self.release = asyncio.Event()
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send):
        self.paths.append(scope.get("path", scope["type"]))
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await self.release.wait()  # a streaming answer: the request stays in flight meanwhile
        await send({"type": "http.response.body", "body": b"data: done\n\n"})


class _RequestId:
    """Serve's request-id middleware: it wraps the proxy and keeps it as ``_app``."""

    def __init__(self, app) -> None:
        self._app = app

    async def __call__(self, scope, receive, send):
        await self._app(scope, receive, send)


async def _request(gate, path: str) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    await gate({"type": "http", "method": "POST", "path": path, "headers": []}, receive, send)
    return sent


def test_over_the_limit_is_a_429_the_sdk_retries_and_the_proxy_never_sees_it():
    async def scenario():
        proxy = _Proxy({"/edge": "edge", "/": "relay"})
        gate = HttpAdmissionGate(_RequestId(proxy),
                                 ProxyGate(read=lambda: [Announcement("edge", 1, 1, 0.0)], clock=lambda: 0.0))
        first = asyncio.ensure_future(_request(gate, "/edge/v1/completions"))
        await asyncio.sleep(0.05)  # the limits' refresh (a thread) has run
        assert gate.gate.counter.limits == {"edge": 2}
        second = asyncio.ensure_future(_request(gate, "/edge/v1/chat/completions"))
        await asyncio.sleep(0)
        refused = await _request(gate, "/edge/v1/completions")
        other_app = asyncio.ensure_future(_request(gate, "/v1/completions"))  # "relay" has no limit
        await asyncio.sleep(0)
        assert proxy.paths == ["/edge/v1/completions", "/edge/v1/chat/completions", "/v1/completions"]
        proxy.release.set()
        done = [await first, await second, await other_app]
        return refused, done, gate.gate.counter.in_flight

    refused, done, in_flight = asyncio.run(scenario())
    start, body = refused
    headers = dict(start["headers"])
    assert start["status"] == 429 and headers[b"retry-after"] == b"1"
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body["body"])
    error = json.loads(body["body"])["error"]  # the OpenAI error object the SDK reads
    assert error["code"] == "rate_limit_exceeded" and "retry" in error["message"]
    assert all(sent[0]["status"] == 200 for sent in done)
    assert in_flight == {"edge": 0, "relay": 0}  # every admitted request left, streams included


def test_requests_serve_cannot_place_and_non_http_scopes_pass_through():
    async def scenario():
        proxy = _Proxy({"/edge": "edge"})
        proxy.release.set()
        gate = HttpAdmissionGate(_RequestId(proxy), ProxyGate(read=lambda: [], clock=lambda: 0.0))
        assert gate._serve_app_of("/nowhere") is None and gate._serve_app_of("/edge/v1/models") == "edge"
        bare = HttpAdmissionGate(object(), ProxyGate(read=lambda: [], clock=lambda: 0.0))
        assert bare._serve_app_of("/edge/v1/models") is None  # no router found: not gated
        lifespan = HttpAdmissionGate(proxy, ProxyGate(read=lambda: [], clock=lambda: 0.0), app_of=lambda path: "edge")

        async def nothing():
            return {}

        async def ignore(message):
            pass
        await lifespan({"type": "lifespan"}, nothing, ignore)
        return proxy.paths, lifespan.gate.counter.in_flight

    paths, in_flight = asyncio.run(scenario())
    assert paths == ["lifespan"] and in_flight == {}


def test_the_environment_names_the_middleware_and_the_switch_turns_it_off(monkeypatch):
    (name, path), = proxy_gate_env().items()
    module, function = path.split(":")
    assert name == CALLBACK_ENV and getattr(importlib.import_module(module), function) is proxy_middlewares
    monkeypatch.delenv(GATE_ENV, raising=False)
    (middleware,) = proxy_middlewares()
    assert middleware.cls is HttpAdmissionGate
    monkeypatch.setenv(GATE_ENV, "0")
    assert proxy_middlewares() == []
