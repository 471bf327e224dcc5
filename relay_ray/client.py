"""A small synchronous client for RelayService (CLI, tests, evaluation)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import grpc

from relay_ray.policies import make_policy
from relay_ray.rpc.convert import policy_spec_to_pb, sampling_to_pb
from relay_ray.rpc.relay_service import TIMEOUT_METADATA
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


class RelayClient:
    """Talks to RelayService on Serve's gRPC proxy (or any RelayService server)."""

    def __init__(self, address: str = "127.0.0.1:9000", app_name: str | None = None,
                 timeout_s: float | None = 600.0) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = rpb_grpc.RelayServiceStub(self.channel)
        self.metadata = (("application", app_name),) if app_name else ()
        self.timeout_s = timeout_s

    def _metadata(self, extra: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        # Serve's proxy does not pass the call's deadline on: send it as metadata too.
        deadline = ((TIMEOUT_METADATA, str(int(self.timeout_s * 1000))),) if self.timeout_s else ()
        return self.metadata + deadline + tuple(extra)

    def generate(self, request: rpb.GenerateRequest, metadata: Sequence[tuple[str, str]] = ()) -> rpb.GenerateResponse:
        return self.stub.Generate(request, metadata=self._metadata(metadata), timeout=self.timeout_s)

    def generate_stream(self, request: rpb.GenerateRequest,
                        metadata: Sequence[tuple[str, str]] = ()) -> Iterator[rpb.GenerateStreamResponse]:
        return self.stub.GenerateStream(request, metadata=self._metadata(metadata), timeout=self.timeout_s)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout_s)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
