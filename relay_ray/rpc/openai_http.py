"""The OpenAI-compatible HTTP API of the relay: ``/v1/models``, ``/v1/completions``,
``/v1/chat/completions``, unary and streamed (server-sent events).

:class:`OpenAIEdge` takes a Starlette request and returns a Starlette response; the Serve
ingress hands it every HTTP request, so the same :class:`RelayController` (limits,
metrics, traces) serves gRPC and HTTP. Requests convert at the edge
(:mod:`relay_ray.rpc.openai_convert`); every failure is an OpenAI error object with the
status the ``openai`` SDK acts on (:mod:`relay_ray.rpc.openai_errors`). Errors found before
the first byte (bad input, unknown model, overload) get their status; a streamed answer
that fails later ends with an error event and ``data: [DONE]``
(:mod:`relay_ray.rpc.openai_sse`). Each prompt's relay runs in :mod:`relay_ray.rpc.openai_run`
(stop sequences).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from relay_ray.controller import RelayController
from relay_ray.controller.validate import validate_request
from relay_ray.rpc import openai_convert as oc
from relay_ray.rpc import openai_sse
from relay_ray.rpc.openai_errors import (
    OpenAIError, bad_request, error_for, method_not_allowed, model_not_found, not_found,
)
from relay_ray.rpc.openai_run import PromptRunner
from relay_ray.rpc.openai_schema import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    ModelRelayInfo,
    ModelTiers,
    RelayChoiceInfo,
)
from relay_ray.types import RelayRequest


class Authenticator(Protocol):
    """What the edge checks every request with (:class:`relay_ray.rpc.auth.TokenAuthenticator`)."""

    def check(self, metadata: Iterable[tuple[str, str]]) -> None:
        """Raise :class:`~relay_ray.rpc.auth.RelayUnauthenticatedError` (answered 401) to refuse."""


class AllowAll:
    """Accepts every request (no tokens configured)."""

    def check(self, metadata: Iterable[tuple[str, str]]) -> None:
        return None


def _json(model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json", headers=headers)


def error_response(err: OpenAIError) -> Response:
    return _json(err.body(), err.status, err.headers())


def _validation_error(exc: ValidationError) -> OpenAIError:
    err = exc.errors()[0]
    param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    return bad_request(param or None, err["msg"])


class OpenAIEdge:
    """Serves the OpenAI API over one :class:`RelayController`."""

    def __init__(self, controller: RelayController, default_policy: str,
                 authenticator: Authenticator | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.controller = controller
        self.default_policy = default_policy
        self.authenticator = authenticator or AllowAll()
        self._clock = clock
        self._prompts = PromptRunner(controller)

    async def handle(self, request: Request) -> Response:
        """Route one HTTP request (paths relative to the application's route prefix)."""
        root = request.scope.get("root_path", "")
        path = request.url.path
        path = path[len(root):] if root and path.startswith(root) else path
        path = "/" + path.strip("/")
        routes = {"/v1/models": ("GET", self._models), "/v1/completions": ("POST", self._completions),
                  "/v1/chat/completions": ("POST", self._chat)}
        try:
            self.authenticator.check(request.headers.items())  # Bearer token (the SDK's api_key)
            if path.startswith("/v1/models/"):
                route = ("GET", lambda r: self._model(path.removeprefix("/v1/models/")))
            else:
                route = routes.get(path)
            if route is None:
                raise not_found(path)
            if request.method != route[0]:
                raise method_not_allowed(request.method, path)
            return await route[1](request)
        except Exception as exc:  # every failure is an OpenAI error object, never a dead replica
            return error_response(error_for(exc, lambda field: field))

    # ---- models --------------------------------------------------------------------

    async def _cards(self) -> list[ModelCard]:
        infos = await self.controller.tier_infos()  # model names as the tiers show them (no paths)
        names = {tier: info.model for tier, info in infos.items()}
        created = int(self._clock())
        cards = []
        for model, policy in oc.served_models(self.default_policy).items():
            tiers = {tier.value: names[tier] for tier in oc.policy_tiers(policy)}
            cards.append(ModelCard(id=model, created=created, relay=ModelRelayInfo(
                policy=policy, default=model == oc.DEFAULT_MODEL, tiers=ModelTiers(**tiers))))
        return cards

    async def _models(self, request: Request) -> Response:
        return _json(ModelList(data=await self._cards()))

    async def _model(self, model: str) -> Response:
        cards = {card.id: card for card in await self._cards()}
        if model not in cards:
            raise model_not_found(model, list(cards))
        return _json(cards[model])

    # ---- completions ---------------------------------------------------------------

    async def _completions(self, request: Request) -> Response:
        return await self._serve(await self._parse(request, CompletionRequest))

    async def _chat(self, request: Request) -> Response:
        return await self._serve(await self._parse(request, ChatCompletionRequest))

    @staticmethod
    async def _parse(request: Request, model: type[BaseModel]):
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise bad_request(None, f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise bad_request(None, "the body must be a JSON object")
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise _validation_error(exc) from None

    async def _serve(self, req: CompletionRequest | ChatCompletionRequest) -> Response:
        param_of = oc.param_of(req)
        request_id = ""
        try:
            relay_requests = oc.relay_requests(req, self.default_policy)
            request_id = relay_requests[0].request_id
            for relay_request in relay_requests:  # all prompts valid before any runs (same check as gRPC)
                validate_request(relay_request, self.controller.limits)
            timeout_s = req.relay.timeout_s if req.relay else None
            deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
            if req.stream:
                return await self._stream(req, relay_requests, deadline, timeout_s, param_of)
            async with asyncio.timeout_at(deadline):
                answers = await self._unary_answers(relay_requests, req.stop_strings(), timeout_s)
            return _json(self._unary_body(req, relay_requests[0].request_id, answers))
        except Exception as exc:
            return error_response(error_for(exc, param_of, request_id))

    async def _unary_answers(self, requests: list[RelayRequest], stops: tuple[str, ...],
                             timeout_s: float | None) -> list[oc.Answer]:
        async def one(request: RelayRequest) -> oc.Answer:
            async for item in self._prompts.run(request, stops, bool(stops), timeout_s):
                if isinstance(item, oc.Answer):
                    return item
            raise RuntimeError("relay ended without an answer")

        return await _all(one(r) for r in requests)

    def _unary_body(self, req, request_id: str, answers: list[oc.Answer]) -> BaseModel:
        want_segments = bool(req.relay and req.relay.segments)
        usage, created = oc.usage_of(answers), int(self._clock())

        def info(a: oc.Answer) -> RelayChoiceInfo | None:
            return RelayChoiceInfo(segments=a.segments) if want_segments else None

        if isinstance(req, ChatCompletionRequest):
            choices = [ChatChoice(index=i, message=AssistantMessage(content=a.text),
                                  finish_reason=oc.finish_reason_out(a.finish), relay=info(a))
                       for i, a in enumerate(answers)]
            return ChatCompletion(id=f"chatcmpl-{request_id}", created=created, model=req.model, choices=choices,
                                  usage=usage)
        choices = [CompletionChoice(index=i, text=a.text, finish_reason=oc.finish_reason_out(a.finish),
                                    relay=info(a)) for i, a in enumerate(answers)]
        return Completion(id=f"cmpl-{request_id}", created=created, model=req.model, choices=choices, usage=usage)

    # ---- streaming -----------------------------------------------------------------

    async def _stream(self, req, requests: list[RelayRequest], deadline: float | None, timeout_s: float | None,
                      param_of: Callable[[str], str]) -> Response:
        """Start every prompt's relay and wait for its first piece, so that errors before
        the first byte get their HTTP status; then stream server-sent events."""
        stops = req.stop_strings()
        runs = [self._prompts.run(r, stops, True, timeout_s) for r in requests]
        try:
            async with asyncio.timeout_at(deadline):
                firsts = await _all(anext(run) for run in runs)
        except BaseException:
            await asyncio.gather(*(run.aclose() for run in runs), return_exceptions=True)
            raise
        merged = openai_sse.merge([openai_sse.prepend(first, run) for first, run in zip(firsts, runs)])
        body = openai_sse.events(req, requests[0].request_id, merged, deadline, param_of, self._clock)
        return StreamingResponse(body, media_type="text/event-stream", headers=openai_sse.SSE_HEADERS)


async def _all(coros) -> list:
    """Run coroutines concurrently; the first failure cancels the others and is raised as
    itself (not as the ExceptionGroup a TaskGroup raises)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    return [t.result() for t in tasks]
