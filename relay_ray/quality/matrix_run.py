"""Run a matrix plan (:mod:`relay_ray.quality.matrix`) against deployments it starts itself.

One Ray/Serve instance; each deployment replaces the previous one under the same application
name (as ``relay-ray bench`` does), so only one pair of engines runs at a time. With
``co_deploy`` every deployment of the plan stays up as an application of its own, and the
latency passes of all of them run interleaved at the end (ablation arms measured side by side;
an idle deployment's engines take no CPU, but each holds its memory). Results are written after
every pass to ``OUT/results.json``; ``--resume`` skips passes already there.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
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


def _deploy(name: str, root: Path, app: str = APP_NAME) -> None:
    """Deploy ``name`` as application ``app``, replacing what ran under that name."""
    from ray import serve

    from relay_ray.serve.builder import build_app

    _TIER_HANDLES.pop(app, None)
    if app in serve.status().applications:
        serve.delete(app)
    print(f"[matrix] deploying {name} as {app} ...", file=sys.stderr, flush=True)
    serve.run(build_app(deployment_config(name, root)), name=app, route_prefix="/" if app == APP_NAME else f"/{app}")


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


_TIER_HANDLES: dict[str, list] = {}  # application -> its tier handles (``_deploy`` drops them)


def _reset_prefix_caches(app: str = APP_NAME) -> bool:
    """Empty both tiers' prefix caches of application ``app`` (one replica each in every
    deployment with latency passes)."""
    from ray import serve

    from relay_ray.serve.builder import TIER_DEPLOYMENT_NAMES

    if app not in _TIER_HANDLES:
        _TIER_HANDLES[app] = [serve.get_deployment_handle(name, app_name=app) for name in TIER_DEPLOYMENT_NAMES.values()]
    return all([h.reset_prefix_cache.remote().result(timeout_s=60) for h in _TIER_HANDLES[app]])


def run_plan(entries: list[Entry], items, out: Path, latency_items: int, fmt, max_new_tokens: int = 512,
             resume: bool = False, meta: dict | None = None, root: Path = Path("."),
             full_concurrency: int = FULL_CONCURRENCY, co_deploy: bool = False) -> MatrixResults:
    """Run every pass of ``entries`` not already in ``out/results.json`` (with ``resume``).

    Entries of one deployment (consecutive in the plan) share its engines: their full passes run
    first, in plan order, then their latency passes *interleaved* item by item (item 1 of every
    entry, then item 2, ...), each request on emptied prefix caches. So a drift of the machine's
    speed, which moved passes minutes apart by up to 35% here, weighs on every entry alike, and
    no entry finds another's blocks of the same item in a cache. With ``co_deploy`` the
    deployments stay up side by side and the latency passes of *all* entries are interleaved
    after every full pass, so that rows of different deployments (ablation arms) compare too."""
    from relay_ray.bench.console import measure_at_normal_priority
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
        with ExitStack() as stack:
            clients: dict[str, object] = {}  # application -> its client
            pending: list[tuple] = []  # (client, application, entry) of latency passes still to run
            for k, group in enumerate(_by_deployment(todo)):
                app = f"{APP_NAME}{k}" if co_deploy else APP_NAME
                _deploy(group[0].deployment, root, app)
                if app not in clients:
                    clients[app] = stack.enter_context(_client(serve_file.grpc_port, app, co_deploy))
                client = clients[app]
                _warm_up(client)
                for entry in group:
                    _run_full(client, entry, items, fmt, max_new_tokens, results, path, full_concurrency)
                pending += [(client, app, e) for e in group if e.latency and _needs_latency(e, results)]
                if not co_deploy:
                    _run_latency(pending, items[:latency_items], fmt, max_new_tokens, results, path)
                    pending = []
            if pending:
                for client in dict.fromkeys(c for c, _, _ in pending):
                    _warm_up(client)  # deployments idle since their full passes
                _run_latency(pending, items[:latency_items], fmt, max_new_tokens, results, path)
    finally:
        stop_local()
    return results


# vLLM's shared-memory readers spin for a second after their last message (busy_loop_s).
SETTLE_S = 1.2


def _settle(seconds: float) -> None:
    time.sleep(seconds)


def turn_order(rows: list, k: int) -> list:
    """``rows`` in the order item ``k`` runs them: rotated by ``k``, reversed every other round
    of ``len(rows)`` items, so that every row runs at every position and after different rows."""
    n = len(rows)
    order = rows[k % n:] + rows[:k % n]
    return order[::-1] if (k // n) % 2 else order


def _client(grpc_port: int, app: str, by_name: bool):
    from relay_ray.client import RelayClient

    return RelayClient(f"127.0.0.1:{grpc_port}", app_name=app if by_name else None, timeout_s=3600)


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


def _run_latency(entries: list[tuple], items, fmt, max_new_tokens: int, results: MatrixResults,
                 path: Path) -> None:
    """The c=1 passes of ``entries`` ((client, application, entry) each), interleaved item by
    item, each request on empty prefix caches of its application.

    Each row's position within an item rotates (and the order reverses every round), and a
    request on another application than the one before starts once that one's engines have
    gone quiet (:data:`SETTLE_S`): co-deployed rows at fixed positions measured a position
    effect, the row after another deployment's request running while that deployment's
    engines still spun (docs/benchmarks.md, "Rows in turn")."""
    from relay_ray.bench.console import progress
    from relay_ray.quality.runner import run_one
    from relay_ray.quality.runs import PolicyRun

    if not entries:
        return
    runs = {e.label: (PolicyRun(e.label, e.policy, _params(e, results)), e, client, app) for client, app, e in entries}
    done: dict[str, list] = {label: [] for label in runs}
    wall_s = dict.fromkeys(runs, 0.0)
    refused = 0
    previous_app = None
    bar = progress(f"c=1, {len(entries)} rows interleaved", len(items) * len(entries))
    for k, item in enumerate(items):
        for label in turn_order(list(runs), k):
            run, _, client, app = runs[label]
            if previous_app not in (None, app):
                _settle(SETTLE_S)
            previous_app = app
            refused += not _reset_prefix_caches(app)
            started = time.perf_counter()
            done[label].append(run_one(client, item, run, run.params, fmt, max_new_tokens, True))
            wall_s[label] += time.perf_counter() - started
            bar.update(1)
    bar.close()
    if refused:
        print(f"[matrix] warning: {refused} prefix-cache resets were refused (requests running)", file=sys.stderr)
    for label, (run, entry, _, _) in runs.items():
        _stop_if_all_failed(label, done[label])
        _save(entry, results, path, latency=Pass(concurrency=1, wall_s=wall_s[label], params=run.params,
                                                 results=done[label]))
