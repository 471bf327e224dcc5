"""The quality-and-speed matrix of issue 10 on the cost-scaled pair: what runs, where, and
which split decided what.

Two stages, one command each (docs/quality.md, "One run: accuracy and speed"):

- ``dev``: large-only, the rstitch tau sweep and relayllm's call floors on the dev split (full
  passes only). :func:`relay_ray.quality.matrix_report.decide` picks the tau and the floor by a
  fixed rule and writes them to a decisions file (committed: ``data/arith/scaled-decisions.json``). The relaygen cue set is
  the calibration split's (``relay-ray calibrate relaygen``); the other cue sets are points of
  the curve, not candidates.
- ``final``: every row of the issue on the test split, once: large-only, small-only, rstitch,
  relaygen, relayllm (caller deployment), the structure-matched random routers, vLLM
  speculative decoding alone and under relaygen/rstitch, large-only and speculative decoding
  on both cores (throughput peers), the tau sweep and the cue sets (Pareto curves; their full
  passes on the first ``curve_items`` items, to keep the run within a few hours on 2 cores).

Each entry runs a *full* pass (every item at concurrency 16: accuracy, token and compute
share, switches, throughput, p95) and, unless it is a peer, a *latency* pass (the first
``--latency-items`` items at concurrency 1: latency, efficiency, handoffs).
"""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from relay_ray.quality.runs import load_cue_file
from relay_ray.tasks.arith import HARD_CUES

SCALED, CALLER, SPEC, KV = "scaled", "caller", "spec", "kv"
LARGE_X2, SPEC_X2 = "large x2", "spec x2"
CONFIGS = {SCALED: "cluster/serve-scaled.yaml", CALLER: "cluster/serve-scaled-caller.yaml",
           SPEC: "cluster/serve-scaled-spec.yaml", KV: "cluster/serve-scaled-kv.yaml"}
# Peers on both cores: two one-core replicas of the large tier (balanced routing), built
# from a served config (docs/benchmarks.md: tensor parallelism and two replicas measured alike).
PEERS = {LARGE_X2: SCALED, SPEC_X2: SPEC}
# Item 3's prefill-ahead ablation on the real policies: each arm runs its latency passes in one
# run, against a large-only latency pass of the same run. A derived deployment is its base
# config with the controller and large-tier settings given: prefill-ahead off, on with every
# warm-up the segment's budget allows, and on with warm-ups gated by the policy's recent
# segment lengths (controller/prefill_ahead.py, WarmTiming), each with the large tier's first
# chunk pinned off ("plain") unless the arm is a first-chunk arm.
ABLATION, SCALED_PA, SCALED_GATED = "scaled (ablation)", "scaled + prefill-ahead", "scaled + gated prefill-ahead"
CALLER_ABL, CALLER_PA, CALLER_GATED = "caller (ablation)", "caller + prefill-ahead", "caller + gated prefill-ahead"
# The large tier asks its engine for one token first (TierConfig.first_chunk_tokens; the served
# config's setting): with prefill-ahead off, and with gated warm-ups.
SCALED_CHUNK, CALLER_CHUNK = "scaled + first chunk", "caller + first chunk"
SCALED_GATED_CHUNK = "scaled + gated prefill-ahead + first chunk"
# Gated warm-ups with the large engine at niceness 10: its warm-up steps use the core the small
# tier does not decode on, and yield it to the service's processes (controller, replicas), so
# that those do not take the small engine's core (TierConfig.engine_niceness).
SCALED_GATED_YIELD = "scaled + gated prefill-ahead + first chunk, large engine yields"
# Both tiers' engines sleep 30 µs between polls instead of vLLM's busy loop
# (TierConfig.engine_poll_sleep_us; 0, vLLM's busy loop, in the served config).
SCALED_SLEEP = "scaled, engines sleep between polls"
# The same after 10 ms of vLLM's busy loop after each message (TierConfig.engine_poll_spin_us):
# a tier in the middle of a segment hands its steps over at once, an idle one sleeps.
SCALED_SPIN = "scaled, engines spin then sleep between polls"
# R-Stitch's small-segment rule from returned logprobs instead of in the small tier's engine
# (TierConfig.entropy_in_engine, on in the served config and in every other arm).
SCALED_LOGPROBS = "scaled + first chunk, rule from logprobs"
_OFF = {"prefill_ahead": False}
_ON = {"prefill_ahead": True, "prefill_ahead_hide_probability": 0.0}
_GATED = {"prefill_ahead": True, "prefill_ahead_hide_probability": 0.5}
_PLAIN, _CHUNK = {"first_chunk_tokens": 0}, {"first_chunk_tokens": 1}
_LOGPROBS = {"entropy_in_engine": False}
_YIELD = _CHUNK | {"engine_niceness": 10}
_SLEEP = {"engine_poll_sleep_us": 30}
_SPIN = _SLEEP | {"engine_poll_spin_us": 10_000}
# deployment: (base, controller settings, large tier settings[, small tier settings])
PREFILL_AHEAD_ARMS = {ABLATION: (SCALED, _OFF, _PLAIN), SCALED_PA: (SCALED, _ON, _PLAIN),
                      SCALED_GATED: (SCALED, _GATED, _PLAIN), SCALED_CHUNK: (SCALED, _OFF, _CHUNK),
                      SCALED_GATED_CHUNK: (SCALED, _GATED, _CHUNK), SCALED_GATED_YIELD: (SCALED, _GATED, _YIELD),
                      SCALED_SLEEP: (SCALED, {}, _SLEEP, _SLEEP),
                      SCALED_SPIN: (SCALED, {}, _SPIN, _SPIN), SCALED_LOGPROBS: (SCALED, _OFF, _CHUNK, _LOGPROBS),
                      CALLER_ABL: (CALLER, _OFF, _PLAIN), CALLER_PA: (CALLER, _ON, _PLAIN),
                      CALLER_GATED: (CALLER, _GATED, _PLAIN), CALLER_CHUNK: (CALLER, _OFF, _CHUNK)}
# Where a deployment without single-tier runs of its own takes its tier costs: (large, small).
COST_FROM = {name: (ABLATION, arm[0]) for name, arm in PREFILL_AHEAD_ARMS.items()}
# The arms' names in labels ("rstitch, prefill-ahead off") and in the ablation table.
ARM_NAMES = {ABLATION: "prefill-ahead off", SCALED_PA: "prefill-ahead", SCALED_GATED: "gated prefill-ahead",
             SCALED_CHUNK: "one-token first chunk", SCALED_GATED_CHUNK: "gated prefill-ahead + first chunk",
             SCALED_GATED_YIELD: "gated prefill-ahead + first chunk, large engine yields",
             SCALED_LOGPROBS: "first chunk, rule from logprobs", SCALED_SLEEP: "engines sleep between polls",
             SCALED_SPIN: "engines spin 10 ms, then sleep between polls",
             CALLER_ABL: "prefill-ahead off", CALLER_PA: "prefill-ahead",
             CALLER_GATED: "gated prefill-ahead", CALLER_CHUNK: "one-token first chunk"}
CUES_FILE = "demo-models/relaygen-cues.json"
DECISIONS_FILE = "data/arith/scaled-decisions.json"
TAUS = (0.02, 0.05, 0.08, 0.12, 0.2, 0.3)
RELAYLLM_PARAMS = {"max_calls": 32}
# The dev stage's relayllm points: min_call_tokens, the floor on the large model's span per call.
CALL_FLOORS = (1, 2, 4, 8)


class Group(str, enum.Enum):
    MAIN = "main"
    TAU_SWEEP = "tau sweep"
    CUE_SETS = "cue sets"
    PEER = "peer"
    CALL_FLOOR = "call floor"  # dev: relayllm with a floor on each call's span
    HANDOFF = "handoff ablation"  # latency passes only: the handoff into the large tier, arm by arm
    COST = "cost"  # single-tier latency runs that give a deployment's tier costs


class Entry(BaseModel):
    """One row: a policy run on one deployment, and which passes it gets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    policy: str
    params: dict = Field(default_factory=dict)
    match: str | None = None  # random: the label whose large share and segment length it takes
    deployment: str = SCALED
    group: Group = Group.MAIN
    full: bool = True
    latency: bool = True
    items: int | None = None  # full pass over the first N items only (curve points); None: all
    tau: float | None = None  # rstitch rows: the threshold (tau-sweep curve)
    cue_set: str | None = None  # relaygen rows: the cue set (cue-set curve)
    call_floor: int | None = None  # dev relayllm rows: min_call_tokens


class Decisions(BaseModel):
    """What the dev stage chose, and the evidence (committed, read by the final stage)."""

    model_config = ConfigDict(extra="forbid")

    split: str
    rstitch_tau: float
    relaygen_cue_set: str
    relayllm_min_call_tokens: int = Field(1, ge=1)  # 1: the caller's own span lengths
    rules: dict[str, str]
    evidence: dict = Field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Decisions:
        return cls.model_validate_json(Path(path).read_text())


def cue_sets(cues_file: str = CUES_FILE) -> dict[str, dict]:
    """relaygen parameter sets from most to least large-model work (the cue-set curve)."""
    calibrated = list(load_cue_file(cues_file))
    discourse = [c for c in calibrated if c[:1].isupper()]
    return {
        "answer only": {"offload_sentences": False},
        "discourse cues": {"cues": discourse},
        "calibrated": {"cues": calibrated},
        "all task cues": {"cues": calibrated + [c for c in HARD_CUES if c not in calibrated]},
    }


def _rstitch(label: str, tau: float, group: Group, **kw) -> Entry:
    return Entry(label=label, policy="rstitch", params={"tau": tau}, group=group, tau=tau, **kw)


def _relaygen(label: str, name: str, params: dict, group: Group, **kw) -> Entry:
    return Entry(label=label, policy="relaygen", params=params, group=group, cue_set=name, **kw)


def relayllm_params(floor: int) -> dict:
    """relayllm's parameters with call floor ``floor`` (1: the caller's own span lengths)."""
    return RELAYLLM_PARAMS | ({"min_call_tokens": floor} if floor > 1 else {})


def dev_plan(taus=TAUS, floors=CALL_FLOORS) -> list[Entry]:
    """The dev stage: accuracy and compute of large-only, every tau and every relayllm call
    floor (caller deployment), no latency passes."""
    out = [Entry(label="large-only", policy="large-only", latency=False)]
    out += [_rstitch(f"rstitch tau={t}", t, Group.TAU_SWEEP, latency=False) for t in taus]
    return out + [Entry(label=f"relayllm floor={f}", policy="relayllm", params=relayllm_params(f), deployment=CALLER,
                        group=Group.CALL_FLOOR, latency=False, call_floor=f) for f in floors]


def final_plan(decisions: Decisions, cues_file: str = CUES_FILE, taus=TAUS, curve_items: int | None = 200) -> list[Entry]:
    """The final stage, in run order (grouped by deployment, matched runs after their match).
    Curve points (tau sweep, cue sets) run their full pass on the first ``curve_items`` items."""
    sets = cue_sets(cues_file)
    tau, cue_set = decisions.rstitch_tau, decisions.relaygen_cue_set
    main = [
        Entry(label="large-only", policy="large-only"),
        Entry(label="small-only", policy="small-only"),
        _rstitch("rstitch", tau, Group.MAIN),
        Entry(label="random@rstitch", policy="random", match="rstitch"),
        _relaygen("relaygen", cue_set, sets[cue_set], Group.MAIN),
        Entry(label="random@relaygen", policy="random", match="relaygen"),
    ]
    sweep = [_rstitch(f"rstitch tau={t}", t, Group.TAU_SWEEP, items=curve_items) for t in taus if t != tau]
    sweep += [_relaygen(f"relaygen {n}", n, p, Group.CUE_SETS, items=curve_items)
              for n, p in sets.items() if n != cue_set]
    caller = [
        Entry(label="caller alone", policy="small-only", deployment=CALLER),
        Entry(label="relayllm", policy="relayllm", params=relayllm_params(decisions.relayllm_min_call_tokens), deployment=CALLER),
        Entry(label="random@relayllm", policy="random", match="relayllm", deployment=CALLER),
    ]
    spec = [
        Entry(label="spec decoding", policy="large-only", deployment=SPEC),
        Entry(label="small-only (spec deployment)", policy="small-only", deployment=SPEC, group=Group.COST,
              full=False),
        _relaygen("relaygen + spec", cue_set, sets[cue_set], Group.MAIN, deployment=SPEC),
        _rstitch("rstitch + spec", tau, Group.MAIN, deployment=SPEC),
    ]
    # Item 3's handoff work on the same pair: the large tier keeps each request's KV in a session
    # and is fed the small tier's tokens while they are written (same answers; its large compute
    # share leaves out the feeds, which the responses do not report).
    kv = [_rstitch("rstitch + KV sessions", tau, Group.MAIN, deployment=KV),
          _relaygen("relaygen + KV sessions", cue_set, sets[cue_set], Group.MAIN, deployment=KV)]
    peers = [Entry(label="large-only x2", policy="large-only", deployment=LARGE_X2, group=Group.PEER, latency=False),
             Entry(label="spec decoding x2", policy="large-only", deployment=SPEC_X2, group=Group.PEER,
                   latency=False)]
    return main + sweep + caller + spec + kv + peers + prefill_ahead_ablation(
        tau, cue_set, sets[cue_set], relayllm_params(decisions.relayllm_min_call_tokens))


def prefill_ahead_ablation(tau: float, cue_set: str, cue_params: dict,
                           relayllm: dict = RELAYLLM_PARAMS) -> list[Entry]:
    """Each real policy with prefill-ahead off, on, and on with gated warm-ups, and with the
    large tier's one-token first chunk (rstitch and relaygen: prefill-ahead off and gated; the
    entropy rule is what it is for), latency passes only (the answers are the same by greedy exactness), and a large-only latency pass that
    gives this run's decode step.

    Every arm finds the same prefix cache: each deployment starts with fresh engines, and the
    arms run in the same order on both. Large-only runs after the off arms, never before them:
    its answers to the same items would sit in the large tier's prefix cache and serve part of
    their handoffs (a first run with large-only first measured 14 uncached tokens per handoff
    for rstitch off against 9 on, and its arms could not be compared)."""
    arms = []
    for deployment in (ABLATION, SCALED_PA, SCALED_GATED, SCALED_CHUNK, SCALED_GATED_CHUNK):
        arm = ARM_NAMES[deployment]
        arms += [_rstitch(f"rstitch, {arm}", tau, Group.HANDOFF, deployment=deployment, full=False),
                 _relaygen(f"relaygen, {arm}", cue_set, cue_params, Group.HANDOFF, deployment=deployment, full=False)]
        if deployment == ABLATION:
            arms.append(Entry(label="large-only (ablation)", policy="large-only", deployment=ABLATION,
                              group=Group.HANDOFF, full=False))
    # Only rstitch has a rule the small tier can run in its engine; the yielding engine is about
    # rstitch's small segments.
    for deployment in (SCALED_LOGPROBS, SCALED_GATED_YIELD, SCALED_SLEEP, SCALED_SPIN):
        arms.append(_rstitch(f"rstitch, {ARM_NAMES[deployment]}", tau, Group.HANDOFF, deployment=deployment,
                             full=False))
    for deployment in (CALLER_ABL, CALLER_PA, CALLER_GATED, CALLER_CHUNK):
        arms.append(Entry(label=f"relayllm, {ARM_NAMES[deployment]}", policy="relayllm", params=relayllm, deployment=deployment,
                          group=Group.HANDOFF, full=False))
    return arms


def check_plan(entries: list[Entry]) -> None:
    """Labels are unique and every match names an earlier run on the same deployment."""
    seen: dict[str, Entry] = {}
    for e in entries:
        if e.label in seen:
            raise ValueError(f"label {e.label!r} is used twice")
        if e.match is not None and (e.match not in seen or seen[e.match].deployment != e.deployment):
            raise ValueError(f"{e.label!r}: match={e.match!r} must name an earlier run on {e.deployment!r}")
        seen[e.label] = e
