"""The policy contract: pure functions from relay state to the next segment.

A policy never performs I/O, reads a clock or draws unseeded randomness. The controller
calls :meth:`Policy.plan` to get the next :class:`SegmentPlan`, runs it on a tier, then
:meth:`Policy.advance` to fold the result into a new state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from relay_ray.state import RelayState
from relay_ray.types import FinishReason, SegmentRecord, SegmentResult, SignalRequest, StopRule, Tier


class PolicyParams(BaseModel):
    """Typed parameters of a policy; unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class SegmentPlan:
    """Which tier writes next, under which stop rule, returning which signals."""

    tier: Tier
    stop: StopRule
    signals: SignalRequest = SignalRequest()


@dataclass(frozen=True, slots=True)
class Transition:
    """A policy's verdict on a finished segment.

    ``num_kept`` keeps only the first tokens of the result (``None`` keeps all of them);
    ``memo`` updates the policy's memo in the state.
    """

    next_tier: Tier
    num_kept: int | None = None
    memo: dict | None = None


class Policy(ABC):
    """Base class of relay policies. Subclasses set ``name`` and ``Params``."""

    name: ClassVar[str]
    Params: ClassVar[type[PolicyParams]] = PolicyParams
    #: Close an open ``<think>`` block when the budget runs out (RelayGen's fallback).
    closes_think_on_budget: ClassVar[bool] = False
    # False for policies that never hand over: the controller then never warms the other tier.
    switches_tiers: ClassVar[bool] = True

    def __init__(self, params: PolicyParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @abstractmethod
    def initial_tier(self) -> Tier:
        """The tier that writes the first segment."""

    @abstractmethod
    def plan(self, state: RelayState) -> SegmentPlan:
        """The next segment for ``state`` (not finished, ``remaining_tokens > 0``)."""

    @abstractmethod
    def transition(self, state: RelayState, plan: SegmentPlan, result: SegmentResult) -> Transition:
        """Decide what to keep of ``result`` and which tier writes next."""

    def advance(
        self, state: RelayState, plan: SegmentPlan, result: SegmentResult, record: SegmentRecord
    ) -> RelayState:
        """Fold a finished segment into the state: commit, then finish or switch tiers."""
        verdict = self.transition(state, plan, result)
        num_kept = len(result.token_ids) if verdict.num_kept is None else verdict.num_kept
        state = state.commit(record, result, num_kept)
        if verdict.memo:
            state = state.with_memo(**verdict.memo)
        if result.finish_reason in (FinishReason.EOS, FinishReason.ABORTED):
            return state.finish(result.finish_reason)
        if state.remaining_tokens == 0:
            return state.finish(FinishReason.BUDGET)
        return state.switch_to(verdict.next_tier)

    @staticmethod
    def budget(state: RelayState, limit: int | None = None) -> int:
        """Tokens the next segment may write: the request's remainder, capped by ``limit``."""
        return state.remaining_tokens if limit is None else min(limit, state.remaining_tokens)
