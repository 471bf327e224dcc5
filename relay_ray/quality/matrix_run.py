"""Run a matrix plan (:mod:`relay_ray.quality.matrix`) against deployments it starts itself.

One Ray/Serve instance; each deployment replaces the previous one under the same application
name (as ``relay-ray bench`` does), so only one pair of engines runs at a time. Results are
written after every pass to ``OUT/results.json``; ``--resume`` skips passes already there.
"""

from __future__ import annotations

import sys
import time
from itertools import groupby
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from relay_ray.quality.matrix import CONFIGS, PEERS, PREFILL_AHEAD_ARMS, Entry
from relay_ray.quality.runner import ItemResult

APP_NAME = "relay"
FULL_CONCURRENCY = 16


class Pass(BaseModel):
    """One pass of one entry: the items' results, the wall time and the concurrency."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int
    wall_s: float
    params: dict
    results: list[ItemResult]


class EntryResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry: Entry
    full: Pass | None = None
    latency: Pass | None = None


class MatrixResults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    meta: dict = Field(default_factory=dict)
    entries: dict[str, EntryResult] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> MatrixResults:
        return cls.model_validate_json(Path(path).read_text())

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json())
        tmp.replace(path)


def deployment_config(name: str, root: Path = Path(".")):
    """The RelayConfig of deployment ``name``: a served config file, an ablation arm of one, or
    a two-core peer."""
    from relay_ray.serve.local import load_serve_file

    if name in CONFIGS:
        return load_serve_file(root / CONFIGS[name]).relay
    if name in PREFILL_AHEAD_ARMS:
        base_name, settings, large_settings, *small_settings = PREFILL_AHEAD_ARMS[name]
        base = deployment_config(base_name, root)
        return base.model_copy(update={"controller": base.controller.model_copy(update=settings),
                                       "large": base.large.model_copy(update=large_settings),
                                       "small": base.small.model_copy(update=(small_settings or [{}])[0])})
    base = deployment_config(PEERS[name], root)
    cores = (base.large.cpu_threads_bind or "0", base.small.cpu_threads_bind or "1")
    large = base.large.model_copy(update={"num_replicas": 2, "cpu_threads_bind_by_replica": cores,
                                          "request_router": "balanced"})
    return base.model_copy(update={"large": large})


def _deploy(name: str, root: Path) -> None:
    from ray import serve

    from relay_ray.serve.builder import build_app

    _TIER_HANDLES.clear()
    if APP_NAME in serve.status().applications:
        serve.delete(APP_NAME)
    print(f"[matrix] deploying {name} ...", file=sys.stderr, flush=True)
    serve.run(build_app(deployment_config(name, root)), name=APP_NAME, route_prefix="/")


def _params(entry: Entry, results: MatrixResults) -> dict:
    """The entry's parameters; a ``match`` takes the matched run's share and segment length."""
    from relay_ray.quality.report import summarize
    from relay_ray.quality.runs import PolicyRun, matched_params

    if entry.match is None:
        return dict(entry.params)
    matched = results.entries[entry.match].full
    s = summarize(PolicyRun(entry.match, "?"), {}, matched.results)
    return matched_params(entry.params, s.large_share, s.large_share * s.mean_tokens, s.large_segments_per_request)


def _pass(client, entry: Entry, items, params: dict, concurrency: int, fmt, max_new_tokens: int) -> Pass:
    from relay_ray.quality.runner import run_items
    from relay_ray.quality.runs import PolicyRun

    # Speculative decoding's compute is counted from large-only's traces; latency passes are
    # small, and their traces show what a relay's segments were (draft acceptance inside them).
    keep_text = entry.policy == "large-only" or concurrency == 1
    run = PolicyRun(entry.label, entry.policy, params)
    started = time.perf_counter()
    results = run_items(client, items, run, params, fmt, max_new_tokens, concurrency, keep_text,
                        label=f"{entry.label} c={concurrency}")
    _stop_if_all_failed(entry.label, results)
    return Pass(concurrency=concurrency, wall_s=time.perf_counter() - started, params=params, results=results)


def _stop_if_all_failed(label: str, results) -> None:
    """A pass whose every request failed is a broken setup, not a policy's accuracy: stop unsaved."""
    failed = [r.error for r in results if r.error]
    if results and len(failed) == len(results):
        raise RuntimeError(f"{label}: all {len(results)} requests failed, the first with {failed[0]!r}; "
                           "the pass is not saved: fix the cause and run again with --resume")


def _warm_up(client) -> None:
    from relay_ray.client import build_request

    client.wait_ready()
    for policy, params in (("large-only", {}), ("fixed-ratio", {"large_tokens": 4, "small_tokens": 4})):
        client.generate(build_request("warm up the tiers", policy, params, max_new_tokens=16))


_TIER_HANDLES: list = []  # of the deployment now serving (``_deploy`` empties it)


def _reset_prefix_caches() -> bool:
    """Empty both tiers' prefix caches (one replica each in every deployment with latency passes)."""
    from ray import serve

    from relay_ray.serve.builder import TIER_DEPLOYMENT_NAMES

    if not _TIER_HANDLES:
        _TIER_HANDLES.extend(serve.get_deployment_handle(name, app_name=APP_NAME)
                             for name in TIER_DEPLOYMENT_NAMES.values())
    return all([h.reset_prefix_cache.remote().result(timeout_s=60) for h in _TIER_HANDLES])


def run_plan(entries: list[Entry], items, out: Path, latency_items: int, fmt, max_new_tokens: int = 512,
             resume: bool = False, meta: dict | None = None, root: Path = Path("."),
             full_concurrency: int = FULL_CONCURRENCY) -> MatrixResults:
    """Run every pass of ``entries`` not already in ``out/results.json`` (with ``resume``).

    Entries of one deployment (consecutive in the plan) share its engines: their full passes run
    first, in plan order, then their latency passes *interleaved* item by item (item 1 of every
    entry, then item 2, ...), each request on emptied prefix caches. So a drift of the machine's
    speed, which moved passes minutes apart by up to 35% here, weighs on every entry alike, and
    no entry finds another's blocks of the same item in a cache."""
    from relay_ray.bench.console import measure_at_normal_priority
    from relay_ray.client import RelayClient
    from relay_ray.serve.local import load_serve_file, start_serve, stop_local

    path = out / "results.json"
    results = MatrixResults.load(path) if resume and path.is_file() else MatrixResults()
    results.meta.update(meta or {})
    todo = [e for e in entries if _missing(e, results.entries.get(e.label))]
    if not todo:
        return results
    serve_file = load_serve_file(root / CONFIGS[next(iter(CONFIGS))])
    measure_at_normal_priority()
    start_serve(serve_file)
    try:
        with RelayClient(f"127.0.0.1:{serve_file.grpc_port}", timeout_s=3600) as client:
            for group in _by_deployment(todo):
                _deploy(group[0].deployment, root)
                _warm_up(client)
                for entry in group:
                    _run_full(client, entry, items, fmt, max_new_tokens, results, path, full_concurrency)
                _run_latency(client, [e for e in group if e.latency and _needs_latency(e, results)],
                             items[:latency_items], fmt, max_new_tokens, results, path)
    finally:
        stop_local()
    return results


def _by_deployment(entries: list[Entry]) -> list[list[Entry]]:
    return [list(group) for _, group in groupby(entries, key=lambda e: e.deployment)]


def _missing(entry: Entry, done: EntryResult | None) -> bool:
    return done is None or (entry.full and done.full is None) or (entry.latency and done.latency is None)


def _needs_latency(entry: Entry, results: MatrixResults) -> bool:
    done = results.entries.get(entry.label)
    return done is None or done.latency is None


def _save(entry: Entry, results: MatrixResults, path: Path, **passes: Pass) -> None:
    record = results.entries.get(entry.label) or EntryResult(entry=entry)
    for name, value in passes.items():
        setattr(record, name, value)
    results.entries[entry.label] = record
    results.save(path)


def _run_full(client, entry: Entry, items, fmt, max_new_tokens: int, results: MatrixResults, path: Path,
              full_concurrency: int) -> None:
    done = results.entries.get(entry.label)
    if entry.full and (done is None or done.full is None):
        full = _pass(client, entry, items[:entry.items] if entry.items else items, _params(entry, results),
                     full_concurrency, fmt, max_new_tokens)
        _save(entry, results, path, full=full)


def _run_latency(client, entries: list[Entry], items, fmt, max_new_tokens: int, results: MatrixResults,
                 path: Path) -> None:
    """The c=1 passes of ``entries``, interleaved item by item, each request on empty prefix caches."""
    from relay_ray.bench.console import progress
    from relay_ray.quality.runner import run_one
    from relay_ray.quality.runs import PolicyRun

    if not entries:
        return
    runs = {e.label: (PolicyRun(e.label, e.policy, _params(e, results)), e) for e in entries}
    done: dict[str, list] = {label: [] for label in runs}
    wall_s = dict.fromkeys(runs, 0.0)
    refused = 0
    bar = progress(f"c=1, {len(entries)} rows interleaved", len(items) * len(entries))
    for item in items:
        for label, (run, _) in runs.items():
            refused += not _reset_prefix_caches()
            started = time.perf_counter()
            done[label].append(run_one(client, item, run, run.params, fmt, max_new_tokens, True))
            wall_s[label] += time.perf_counter() - started
            bar.update(1)
    bar.close()
    if refused:
        print(f"[matrix] warning: {refused} prefix-cache resets were refused (requests running)", file=sys.stderr)
    for label, (run, entry) in runs.items():
        _stop_if_all_failed(label, done[label])
        _save(entry, results, path, latency=Pass(concurrency=1, wall_s=wall_s[label], params=run.params,
                                                 results=done[label]))
