"""Which failures RelayClient resumes on another controller replica."""

from __future__ import annotations

import grpc

from relay_ray.client import resumable


class Failure(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_dead_controller_replicas_are_resumed_other_failures_are_not():
    dead = ("The actor died unexpectedly before finishing this task.\n\tclass_name: "
            "ServeReplica:same:RelayController\n\tactor_id: 2774")
    assert resumable(Failure(grpc.StatusCode.INTERNAL, dead))
    assert resumable(Failure(grpc.StatusCode.UNAVAILABLE, "Stream removed"))
    assert not resumable(Failure(grpc.StatusCode.INTERNAL, "internal error (request 1); see the log"))
    assert not resumable(Failure(grpc.StatusCode.INVALID_ARGUMENT, "prompt: empty"))
    assert not resumable(Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"))
