"""Resume tokens: a request survives the death of the controller replica running it.

After every segment the stream carries a *resume token*: the relay state at that segment
boundary that the client does not already hold (policy memo, phase, tier, counters),
signed with the application's secret (HMAC-SHA256) and bound to the request and to the
committed output. The client keeps the committed output itself (segment_end text and token
ids) plus what it received of the running segment. If the stream breaks, it sends the same
request again with the token, the committed output and the partial segment; any controller
replica of the application verifies the token and continues: the partial segment is
resumed exactly like a migrated one (its tokens are not generated or sent again).

Pure: standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

from relay_ray.errors import RelayInputError
from relay_ray.state import RelayState, Totals
from relay_ray.types import FinishReason, HandoffMode, Phase, RelayRequest, Tier

TOKEN_VERSION = 1


@dataclass(frozen=True, slots=True)
class ResumeInput:
    """What a client sends to resume: the last token and the output it holds (no token: the
    stream broke before the first segment ended; only the partial segment is resumed)."""

    token: bytes
    output_token_ids: tuple[int, ...] = ()  # committed ids (token-id handoff)
    output_text: str = ""  # committed text
    partial_token_ids: tuple[int, ...] = ()  # the running segment's ids received after the token
    partial_text: str = ""  # their text, as received


def request_digest(request: RelayRequest, prompt_token_ids: tuple[int, ...]) -> str:
    """Binds a token to one request: policy, parameters, sampling, budget and prompt."""
    s = request.sampling
    payload = json.dumps([request.request_id, request.policy, request.policy_params, s.temperature, s.top_p, s.top_k,
                          s.seed, s.ignore_eos, request.max_new_tokens, list(prompt_token_ids)],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def output_digest(token_ids: tuple[int, ...], text: str) -> str:
    return hashlib.sha256(json.dumps([list(token_ids), text]).encode()).hexdigest()[:32]


class ResumeCodec:
    """Signs and verifies resume tokens with the application's secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the resume secret must have at least 16 bytes")
        self._secret = secret

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def encode(self, state: RelayState, request_digest_: str, elapsed_ms: float, num_migrations: int) -> bytes:
        t = state.totals()
        body = {
            "v": TOKEN_VERSION, "req": request_digest_,
            "out": output_digest(state.output_token_ids, state.output_text), "n": state.num_output_tokens,
            "tier": state.tier.value, "phase": state.phase.value, "memo": dict(state.memo),
            "seg": t.num_segments, "sw": t.num_switches, "tok": list(t.tokens), "gen": list(t.generated),
            "last": t.last_tier.value if t.last_tier else None, "ms": round(elapsed_ms, 3), "mig": num_migrations,
            "fin": int(state.finish_reason) if state.finish_reason is not None else None,
        }
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        return base64.urlsafe_b64encode(self._sign(payload) + payload)

    def decode(self, token: bytes) -> dict:
        """The token's body, or :class:`RelayInputError` if it was not signed by this application."""
        try:
            raw = base64.urlsafe_b64decode(token)
        except (ValueError, TypeError):
            raise RelayInputError("resume.token", "not a resume token") from None
        signature, payload = raw[:32], raw[32:]
        if len(raw) <= 32 or not hmac.compare_digest(signature, self._sign(payload)):
            raise RelayInputError("resume.token", "not a resume token of this application")
        body = json.loads(payload)
        if body.get("v") != TOKEN_VERSION:
            raise RelayInputError("resume.token", f"unsupported token version {body.get('v')}")
        return body

    def restore(self, base: RelayState, resume: ResumeInput, request_digest_: str) -> tuple[RelayState, float, int]:
        """``base`` (the request's fresh state) advanced to the token's segment boundary;
        also returns the elapsed milliseconds and migrations before it."""
        body = self.decode(resume.token)
        if body["req"] != request_digest_:
            raise RelayInputError("resume.token", "the token belongs to another request")
        ids = resume.output_token_ids if base.handoff is HandoffMode.TOKEN_IDS else ()
        if body["out"] != output_digest(ids, resume.output_text):
            raise RelayInputError("resume.output", "the committed output does not match the token")
        earlier = Totals(body["seg"], body["sw"], tuple(body["tok"]), tuple(body["gen"]),
                         Tier(body["last"]) if body["last"] else None)
        state = RelayState(
            request_id=base.request_id, prompt_token_ids=base.prompt_token_ids, prompt_text=base.prompt_text,
            max_new_tokens=base.max_new_tokens, tier=Tier(body["tier"]), handoff=base.handoff,
            phase=Phase(body["phase"]), output_token_ids=ids, output_text=resume.output_text,
            num_output_tokens=body["n"], memo=_frozen(body["memo"]), earlier=earlier,
            finish_reason=FinishReason(body["fin"]) if body["fin"] is not None else None,
        )
        return state, float(body["ms"]), int(body["mig"])


def _frozen(memo: Mapping) -> Mapping:
    from types import MappingProxyType

    return MappingProxyType(dict(memo))
