"""Failures of the OpenAI HTTP edge as OpenAI error objects with the status a client acts on.

The ``openai`` SDK never retries 400/401/404, retries 429 and 5xx after ``Retry-After``
(when the header is at most 60 s) and obeys ``x-should-retry``; the statuses and headers
here are chosen for that: overload and unavailable tiers are retried, a missed deadline
(the client chose it) is not.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from relay_ray.errors import RelayInputError, RelayOverloadedError, TierUnavailableError
from relay_ray.rpc.auth import RelayUnauthenticatedError
from relay_ray.rpc.openai_schema import ErrorBody, ErrorResponse

logger = logging.getLogger(__name__)
RETRY_AFTER_S = 1  # suggested wait after an overload (429) or an unavailable tier (503)


class OpenAIError(Exception):
    """An error answer: HTTP ``status``, the OpenAI error object's fields, extra headers."""

    def __init__(self, status: int, message: str, type_: str, param: str | None = None,
                 code: str | None = None, retry_after_s: int | None = None,
                 should_retry: bool | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.retry_after_s, self.should_retry = retry_after_s, should_retry

    def body(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code))

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.retry_after_s is not None:
            headers["retry-after"] = str(self.retry_after_s)
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        return headers


def overloaded(retry_after_s: int = RETRY_AFTER_S) -> OpenAIError:
    """Over the admission limit: 429, retried by the SDK after ``Retry-After``."""
    return OpenAIError(429, "the relay is overloaded; retry later", "rate_limit_error",
                       code="rate_limit_exceeded", retry_after_s=retry_after_s)


def bad_request(param: str | None, message: str) -> OpenAIError:
    text = f"{param}: {message}" if param else message
    return OpenAIError(400, text, "invalid_request_error", param=param)


def unauthorized(message: str = "a valid 'authorization: Bearer <token>' is required (the SDK's api_key)",
                 ) -> OpenAIError:
    return OpenAIError(401, message, "authentication_error", code="invalid_api_key")


def model_not_found(model: str, known: list[str]) -> OpenAIError:
    return OpenAIError(404, f"the model {model!r} does not exist; served models: {', '.join(known)}",
                       "invalid_request_error", param="model", code="model_not_found")


def not_found(path: str) -> OpenAIError:
    return OpenAIError(404, f"no route {path}; this server implements /v1/models, /v1/completions and "
                            f"/v1/chat/completions", "invalid_request_error", code="not_found")


def method_not_allowed(method: str, path: str) -> OpenAIError:
    return OpenAIError(405, f"{method} is not allowed on {path}", "invalid_request_error")


def _ray_errors() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(task error wrappers, overload errors, unavailable errors) of Ray. Only those of Ray
    modules already imported: an exception of a module never imported was never raised (and
    the edge's unit tests need not import Ray)."""
    core, serve = sys.modules.get("ray.exceptions"), sys.modules.get("ray.serve.exceptions")
    task = (core.RayTaskError,) if core else ()
    overload = (serve.BackPressureError,) if serve else ()
    unavailable = ((serve.DeploymentUnavailableError,) if serve else ()) + ((core.RayActorError,) if core else ())
    return task, overload, unavailable


def error_for(exc: BaseException, param_of: Callable[[str], str], request_id: str = "") -> OpenAIError:
    """The error answer for an exception raised while serving a request.

    ``param_of`` maps a domain field (``max_new_tokens``, ``policy.tau``) to the request
    field the client sent (``max_tokens``, ``relay.params.tau``). Internal errors are
    logged with the request id and answered without their text.
    """
    task_error, overload, unavailable = _ray_errors()
    while task_error and isinstance(exc, task_error) and getattr(exc, "cause", None) is not None:
        exc = exc.cause  # raised in another process (a tier's prepare): Ray cannot always subclass it
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, RelayInputError):
        return bad_request(param_of(exc.field), exc.message)
    if isinstance(exc, RelayUnauthenticatedError):
        return unauthorized()
    if isinstance(exc, (RelayOverloadedError, *overload)):
        retry = getattr(exc, "retry_after_s", None)
        return overloaded(max(1, round(retry or RETRY_AFTER_S)))
    if isinstance(exc, (TierUnavailableError, ConnectionError, *unavailable)):
        logger.warning("request %s: tier unavailable: %s", request_id, exc)
        return OpenAIError(503, "a model tier is unavailable; retry later", "service_unavailable_error",
                           code="service_unavailable", retry_after_s=RETRY_AFTER_S)
    if isinstance(exc, TimeoutError):
        return OpenAIError(504, "the request's deadline (relay.timeout_s) passed before the answer was complete",
                           "timeout_error", code="deadline_exceeded", should_retry=False)
    logger.error("request %s failed", request_id, exc_info=exc)
    return OpenAIError(500, f"internal error (request {request_id})", "server_error", code="internal_error")
