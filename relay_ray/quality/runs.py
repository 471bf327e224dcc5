"""What to evaluate: a list of labelled policy runs, parsed from ``LABEL=NAME:KEY=VALUE,...``.

Values are JSON when they parse as JSON (``0.3``, ``true``, ``["So", "Thus"]``), else strings.
Two keys are resolved on the client before a request is sent:

- ``cues_file=PATH`` (relaygen): the cues written by ``relay-ray calibrate relaygen``;
- ``match=LABEL`` (random): ``large_share`` becomes the share measured for the run ``LABEL``
  earlier in the same evaluation (the share-matched random router).

Parameters are validated against the policy's typed model before anything runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

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


def load_cue_file(path: str | Path) -> tuple[str, ...]:
    """The ``cues`` list of a cue file written by ``relay-ray calibrate relaygen``."""
    path = Path(path)
    if not path.is_file():
        raise RelayInputError("cues_file", f"cue file not found: {path}")
    try:
        cues = json.loads(path.read_text())["cues"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RelayInputError("cues_file", f"{path} is not a cue file (a JSON object with a 'cues' list)") from None
    if not isinstance(cues, list) or not cues or not all(isinstance(c, str) and c for c in cues):
        raise RelayInputError("cues_file", f"{path}: 'cues' must be a non-empty list of non-empty strings")
    return tuple(cues)


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
