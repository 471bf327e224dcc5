"""What to evaluate: a list of labelled policy runs, parsed from ``LABEL=NAME:KEY=VALUE,...``.

Values are JSON when they parse as JSON (``0.3``, ``true``, ``["So", "Thus"]``), else strings.
Two keys are resolved on the client before a request is sent:

- ``cues_file=PATH`` (relaygen): the cues written by ``relay-ray calibrate relaygen``;
- ``match=LABEL`` (random): the structure-matched random router: ``large_share`` becomes the
  share measured for the run ``LABEL`` earlier in the same evaluation and ``mean_large_tokens``
  its mean large-segment length (large tokens / large segments), so the random router also
  makes about as many switches per request (:func:`matched_params`). Parameters given
  explicitly win over the matched ones.

Parameters are validated against the policy's typed model before anything runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from relay_ray.errors import RelayInputError
from relay_ray.policies import REGISTRY, make_policy


@dataclass(frozen=True)
class PolicyRun:
    label: str
    policy: str
    params: dict = field(default_factory=dict)
    match: str | None = None  # label whose measured large share this (random) run takes


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in (s.strip() for s in parts) if p]


def _value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


class CueFile(BaseModel):
    """A cue file written by ``relay-ray calibrate relaygen`` (other keys: its provenance)."""

    model_config = ConfigDict(extra="allow")

    cues: list[Annotated[str, StringConstraints(min_length=1)]] = Field(min_length=1)


def load_cue_file(path: str | Path) -> tuple[str, ...]:
    """The ``cues`` list of a cue file written by ``relay-ray calibrate relaygen``."""
    path = Path(path)
    if not path.is_file():
        raise RelayInputError("cues_file", f"cue file not found: {path}")
    try:
        return tuple(CueFile.model_validate_json(path.read_text()).cues)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "file"
        raise RelayInputError("cues_file", f"{path} is not a cue file (a JSON object whose 'cues' is a non-empty "
                                           f"list of non-empty strings): {where}: {err['msg']}") from None


def matched_params(params: dict, large_share: float, large_tokens_per_request: float,
                   large_segments_per_request: float) -> dict:
    """``params`` of a ``random:match=LABEL`` run, given what run ``LABEL`` measured.

    A random router with share ``s`` and mean large segment ``m`` writes about ``s*T/m``
    large segments in a ``T``-token answer, each bracketed by two switches, as the matched
    policy's ``large_tokens / large_segments`` segments are.
    """
    out = {"large_share": round(large_share, 4)}
    if large_segments_per_request > 0 and 0 < large_share < 1:
        out["mean_large_tokens"] = round(max(1.0, large_tokens_per_request / large_segments_per_request), 3)
    return {**out, **params}


def parse_run(spec: str) -> PolicyRun:
    """``[LABEL=]NAME[:KEY=VALUE,...]`` -> PolicyRun; RelayInputError names what is wrong."""
    head, _, rest = spec.partition(":")
    label, eq, name = head.partition("=")
    if not eq:
        label, name = "", head
    name = name.strip()
    if name not in REGISTRY:
        raise RelayInputError("policies", f"{spec!r}: unknown policy {name!r}; known: {', '.join(sorted(REGISTRY))}")
    params: dict = {}
    match = None
    for part in _split_top_level(rest):
        key, eq, raw = part.partition("=")
        if not eq:
            raise RelayInputError("policies", f"{spec!r}: expected KEY=VALUE, got {part!r}")
        key = key.strip()
        if key == "match":
            match = raw.strip()
        elif key == "cues_file":
            params["cues"] = list(load_cue_file(raw.strip()))
        else:
            params[key] = _value(raw.strip())
    if match is not None and name != "random":
        raise RelayInputError("policies", f"{spec!r}: match= applies to the random policy only")
    if match is None:
        make_policy(name, params)  # validate now, not after an hour of other runs
    else:
        make_policy(name, {**params, "large_share": 0.5})
    return PolicyRun(label.strip() or spec, name, params, match)


def parse_runs(specs: list[str]) -> list[PolicyRun]:
    runs = [parse_run(s) for s in specs]
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:
            raise RelayInputError("policies", f"label {r.label!r} is used twice")
        if r.match is not None and (r.match not in labels or labels.index(r.match) > labels.index(r.label)):
            raise RelayInputError("policies", f"{r.label!r}: match={r.match} must name a run listed before it")
    return runs
