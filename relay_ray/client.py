"""A small synchronous client for RelayService (CLI, tests, evaluation)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence

import grpc

from relay_ray.policies import make_policy
from relay_ray.rpc.convert import policy_spec_to_pb, sampling_to_pb
from relay_ray.rpc.relay_service import TIMEOUT_METADATA
from relay_ray.rpc.segment_server import MAX_MESSAGE_BYTES

TOKEN_ENV = "RELAY_RAY_TOKEN"
from relay_ray.types import ChatMessage, Sampling
from relay_ray.v1 import relay_pb2 as rpb
from relay_ray.v1 import relay_pb2_grpc as rpb_grpc


def build_request(
    prompt: str | Sequence[ChatMessage],
    policy: str = "",
    params: dict | None = None,
    sampling: Sampling = Sampling(),
    max_new_tokens: int | None = None,
    request_id: str = "",
    validate: bool = True,
) -> rpb.GenerateRequest:
    """A GenerateRequest; with ``validate`` the policy parameters are checked client-side
    (raising RelayInputError) and sent typed."""
    if policy and validate:
        params = make_policy(policy, params).params.model_dump(exclude_unset=True)
    msg = rpb.GenerateRequest(
        policy=policy_spec_to_pb(policy, params or {}),
        sampling=sampling_to_pb(sampling, max_new_tokens),
        request_id=request_id,
    )
    if isinstance(prompt, str):
        msg.text = prompt
    else:
        msg.chat.messages.extend(rpb.ChatMessage(role=m.role, content=m.content) for m in prompt)
    return msg


# Failures after which a request can go on on another controller replica: the replica or its
# connection died. Serve's proxy reports a dead replica as INTERNAL with the Ray error's text
# ("The actor died unexpectedly before finishing this task. class_name: ServeReplica:...").
_RESUMABLE_DETAILS = ("actor died", "actordiederror", "rayactorerror", "actorunavailableerror",
                      "actor is temporarily unavailable", "workercrashederror")


def resumable(exc: grpc.RpcError) -> bool:
    """Whether a failed call may be resumed (a dead controller replica or connection)."""
    code = exc.code() if hasattr(exc, "code") else None
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    return code == grpc.StatusCode.INTERNAL and any(name in details.lower() for name in _RESUMABLE_DETAILS)


class StreamProgress:
    """What a client holds of a streamed request: enough to resume it (relay.proto Resume)."""

    def __init__(self, request: rpb.GenerateRequest) -> None:
        self.request = request
        self.request_id = request.request_id
        self.token = b""
        self.output_ids: list[int] = []
        self.output_text: list[str] = []
        self.partial_ids: list[int] = []
        self.partial_text: list[str] = []

    def observe(self, event: rpb.GenerateStreamResponse) -> None:
        self.request_id = self.request_id or event.request_id
        kind = event.WhichOneof("event")
        if kind == "delta":
            self.partial_ids.extend(event.delta.token_ids)
            self.partial_text.append(event.delta.text)
        elif kind == "segment_end":
            self.output_ids.extend(event.segment_end.token_ids)
            self.output_text.append(event.segment_end.text)
            self.partial_ids, self.partial_text = [], []
            self.token = event.resume_token

    def resume_request(self) -> rpb.GenerateRequest:
        msg = rpb.GenerateRequest()
        msg.CopyFrom(self.request)
        msg.request_id = self.request_id
        msg.resume.CopyFrom(rpb.Resume(
            token=self.token, output_token_ids=self.output_ids if self.token else [],
            output_text="".join(self.output_text) if self.token else "",
            partial_token_ids=self.partial_ids, partial_text="".join(self.partial_text)))
        return msg


class RelayClient:
    """Talks to RelayService on Serve's gRPC proxy (or any RelayService server).

    If a controller replica dies during a call, the call goes on on another replica:
    streams resume where they broke (nothing delivered twice), unary calls are sent again,
    up to ``resume_attempts`` times within the call's timeout.
    """

    def __init__(self, address: str = "127.0.0.1:9000", app_name: str | None = None,
                 timeout_s: float | None = 600.0, resume_attempts: int = 3, token: str | None = None,
                 tls_ca: bytes | None = None) -> None:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        if tls_ca is not None:
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=tls_ca),
                                               options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.stub = rpb_grpc.RelayServiceStub(self.channel)
        self.metadata = (("application", app_name),) if app_name else ()
        if token:
            self.metadata += (("authorization", f"Bearer {token}"),)
        self.timeout_s = timeout_s
        self.resume_attempts = resume_attempts
        self.num_resumes = 0  # calls resumed on another replica (for tests and monitoring)

    def _metadata(self, extra: Sequence[tuple[str, str]], timeout_s: float | None) -> tuple[tuple[str, str], ...]:
        # Serve's proxy does not pass the call's deadline on: send it as metadata too.
        deadline = ((TIMEOUT_METADATA, str(int(timeout_s * 1000))),) if timeout_s else ()
        return self.metadata + deadline + tuple(extra)

    def _attempts(self):
        """(attempt number, time left) for each try of one call."""
        started = time.monotonic()
        for attempt in range(self.resume_attempts + 1):
            left = None if self.timeout_s is None else self.timeout_s - (time.monotonic() - started)
            if left is not None and left <= 0:
                return
            yield attempt, left

    def generate(self, request: rpb.GenerateRequest, metadata: Sequence[tuple[str, str]] = ()) -> rpb.GenerateResponse:
        if not request.request_id:
            request = _with_request_id(request)
        for attempt, left in self._attempts():
            try:
                return self.stub.Generate(request, metadata=self._metadata(metadata, left), timeout=left)
            except grpc.RpcError as exc:
                if attempt >= self.resume_attempts or not resumable(exc):
                    raise
                self._pause(attempt)
        raise grpc.RpcError("the call's timeout passed")  # pragma: no cover: timeouts raise above

    def generate_stream(self, request: rpb.GenerateRequest,
                        metadata: Sequence[tuple[str, str]] = ()) -> Iterator[rpb.GenerateStreamResponse]:
        progress = StreamProgress(request)
        msg = request
        for attempt, left in self._attempts():
            try:
                for event in self.stub.GenerateStream(msg, metadata=self._metadata(metadata, left), timeout=left):
                    progress.observe(event)
                    yield event
                return
            except grpc.RpcError as exc:
                if attempt >= self.resume_attempts or not resumable(exc):
                    raise
                self._pause(attempt)
                msg = progress.resume_request()

    def _pause(self, attempt: int) -> None:
        self.num_resumes += 1
        time.sleep(min(2.0, 0.2 * 2 ** attempt))

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout_s)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def add_connection_args(parser) -> None:
    """``--address --app --token-env --tls-ca``: how a CLI command reaches a relay."""
    parser.add_argument("--address", default="127.0.0.1:9000", help="host:port of the relay's gRPC endpoint")
    parser.add_argument("--app", default=None, help="Serve application name (when several run)")
    parser.add_argument("--token-env", default=TOKEN_ENV, metavar="NAME",
                        help=f"environment variable holding the bearer token, if the relay requires one "
                             f"(default {TOKEN_ENV})")
    parser.add_argument("--tls-ca", default=None, metavar="PEM",
                        help="CA certificate file: connect with TLS (e.g. to `relay-ray gateway`)")


def client_from_args(args, timeout_s: float | None = 600.0) -> RelayClient:
    """A RelayClient for the connection arguments of :func:`add_connection_args`."""
    import os
    from pathlib import Path

    from relay_ray.errors import RelayInputError

    ca = None
    if args.tls_ca:
        path = Path(args.tls_ca)
        if not path.is_file():
            raise RelayInputError("--tls-ca", f"{path} does not exist")
        ca = path.read_bytes()
    token = os.environ.get(args.token_env, "") or None
    return RelayClient(args.address, args.app, timeout_s, token=token, tls_ca=ca)


def _with_request_id(request: rpb.GenerateRequest) -> rpb.GenerateRequest:
    msg = rpb.GenerateRequest()
    msg.CopyFrom(request)
    msg.request_id = uuid.uuid4().hex
    return msg
