"""Authentication at the relay's edges.

- Clients (RelayService, the OpenAI HTTP API) send ``authorization: Bearer <token>``. Tokens
  come from a file (one per line, ``#`` comments) and/or an environment variable (comma
  separated) named in :class:`~relay_ray.config.AuthConfig`, never from a YAML. Several
  tokens may be valid at once (rotation: add the new one, move clients, remove the old
  one); the file is re-read when it changes.
- Tier replicas accept SegmentService calls only with the application's secret (handed to
  the controller and tier replicas through Ray when the application is built) in the
  ``relay-tier-secret`` metadata.

Comparisons are constant-time (``hmac.compare_digest`` on SHA-256 digests, against every
valid token).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Iterable
from pathlib import Path

from relay_ray.errors import RelayError

AUTHORIZATION = "authorization"
TIER_SECRET_METADATA = "relay-tier-secret"


class RelayUnauthenticatedError(RelayError):
    """The caller did not present a valid credential (UNAUTHENTICATED / HTTP 401)."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _matches(candidate: str, digests: Iterable[bytes]) -> bool:
    probe = _digest(candidate)
    found = False
    for digest in digests:  # no early exit: the time does not tell which token matched
        found |= hmac.compare_digest(probe, digest)
    return found


def bearer_token(metadata: Iterable[tuple[str, str]]) -> str:
    """The bearer token in gRPC metadata or HTTP headers (lower-case keys), or ""."""
    for key, value in metadata:
        if key.lower() == AUTHORIZATION:
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


class TokenAuthenticator:
    """Checks client bearer tokens; ``required=False`` accepts every call."""

    def __init__(self, tokens_file: str | None = None, tokens_env: str | None = None, reload_s: float = 5.0,
                 clock=time.monotonic) -> None:
        self.tokens_file = Path(tokens_file) if tokens_file else None
        self.tokens_env = tokens_env
        self.required = bool(tokens_file or tokens_env)
        self._reload_s, self._clock = reload_s, clock
        self._checked_at = -float("inf")
        self._file_state: tuple[float, int] | None = None
        self._digests: tuple[bytes, ...] = ()
        if self.required:
            self._load()
            if not self._digests:
                raise ValueError("authentication is configured but no token was found in "
                                 f"{self.tokens_file or ''} {('$' + tokens_env) if tokens_env else ''}".strip())

    def _load(self) -> None:
        tokens: list[str] = []
        if self.tokens_file is not None:
            text = self.tokens_file.read_text()
            tokens += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
            stat = self.tokens_file.stat()
            self._file_state = (stat.st_mtime, stat.st_size)
        if self.tokens_env:
            tokens += [t.strip() for t in os.environ.get(self.tokens_env, "").split(",") if t.strip()]
        self._digests = tuple(_digest(t) for t in tokens)

    def _maybe_reload(self) -> None:
        now = self._clock()
        if self.tokens_file is None or now - self._checked_at < self._reload_s:
            return
        self._checked_at = now
        try:
            stat = self.tokens_file.stat()
            if (stat.st_mtime, stat.st_size) != self._file_state:
                self._load()
        except OSError:  # keep the tokens we have while the file is being replaced
            pass

    def check(self, metadata: Iterable[tuple[str, str]]) -> None:
        """Raises :class:`RelayUnauthenticatedError` unless the call carries a valid token."""
        if not self.required:
            return
        self._maybe_reload()
        token = bearer_token(metadata)
        if not token or not _matches(token, self._digests):
            raise RelayUnauthenticatedError("a valid 'authorization: Bearer <token>' is required")


class TierSecret:
    """The application's secret for tier ports (empty: tier ports accept every caller)."""

    def __init__(self, secret: str) -> None:
        self._digests = (_digest(secret),) if secret else ()
        self.value = secret

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((TIER_SECRET_METADATA, self.value),) if self.value else ()

    def check(self, metadata: Iterable[tuple[str, str]]) -> None:
        if not self._digests:
            return
        presented = next((v for k, v in metadata if k == TIER_SECRET_METADATA), "")
        if not presented or not _matches(presented, self._digests):
            raise RelayUnauthenticatedError("this port serves the relay's controllers only")
