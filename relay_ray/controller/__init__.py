"""The relay loop and request validation. Pure: no ray, grpc, torch or vllm imports."""

from relay_ray.controller.events import RelayEvent, RelayResult, SegmentFinished, TextDelta
from relay_ray.controller.relay import RelayController, make_job
from relay_ray.controller.tier_client import TierClient
from relay_ray.controller.validate import ControllerLimits, check_prompt_fits, validate_request

__all__ = [
    "ControllerLimits", "RelayController", "RelayEvent", "RelayResult", "SegmentFinished",
    "TextDelta", "TierClient", "check_prompt_fits", "make_job", "validate_request",
]
