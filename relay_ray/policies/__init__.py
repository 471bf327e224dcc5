"""Relay policies, registered by name. Pure: no ray, grpc, torch or vllm imports."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from relay_ray.errors import RelayInputError
from relay_ray.policies.base import Policy, PolicyParams, SegmentPlan, Transition
from relay_ray.policies.fixed_ratio import FixedRatioPolicy
from relay_ray.policies.random_share import RandomSharePolicy
from relay_ray.policies.relaygen import RelayGenPolicy
from relay_ray.policies.relayllm import RelayLLMPolicy
from relay_ray.policies.rstitch import RStitchPolicy
from relay_ray.policies.single import LargeOnlyPolicy, SmallOnlyPolicy

REGISTRY: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (LargeOnlyPolicy, SmallOnlyPolicy, FixedRatioPolicy, RelayGenPolicy,
                RStitchPolicy, RelayLLMPolicy, RandomSharePolicy)
}


def make_policy(name: str, params: Mapping | None = None) -> Policy:
    """Build a registered policy from its name and parameter dict.

    Raises :class:`RelayInputError` naming ``policy`` or ``policy.<param>`` on bad input.
    """
    cls = REGISTRY.get(name)
    if cls is None:
        known = ", ".join(sorted(REGISTRY))
        raise RelayInputError("policy", f"unknown policy {name!r}; known policies: {known}")
    try:
        return cls(cls.Params.model_validate(dict(params or {})))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise RelayInputError(f"policy.{loc}" if loc else "policy", err["msg"]) from None


__all__ = ["REGISTRY", "Policy", "PolicyParams", "SegmentPlan", "Transition", "make_policy"]
