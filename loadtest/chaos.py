"""Chaos run: streaming load on a local relay while replicas of every kind are SIGKILLed.

    python loadtest/chaos.py --config cluster/serve-local.yaml --users 8 --baseline-s 60 \\
        --duration-s 300 --kill-every-s 15 --out out/chaos

Starts a local Ray instance with the config's relay application scaled to ``--replicas``
replicas per tier and controller (so a kill always leaves one), runs ``--users`` streaming
clients (RelayClient: greedy, a policy mix over the arithmetic task's dev problems) for a
fault-free baseline, then for ``--duration-s`` while a killer SIGKILLs one replica every
``--kill-every-s`` seconds, cycling through LargeTier, SmallTier and RelayController (by the
pid Ray reports; only when its deployment has all its replicas). It prints and writes (JSON
and markdown): requests, failures by status, answers that differ from the fault-free answer,
segment migrations and stream resumes, latency p50/p95 without and with faults, and the
recovery time of each kill (until the deployment has all its replicas again). Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

KINDS = ("SmallTier", "LargeTier", "RelayController")
MIX = (("rstitch", {"tau": 0.12}), ("relaygen", {}), ("fixed-ratio", {"large_tokens": 8, "small_tokens": 24}))


@dataclass
class Outcome:
    phase: str
    policy: str
    prompt: str
    status: str
    latency_s: float
    text: str = ""
    migrations: int = 0
    start_s: float = 0.0  # since the run started
    resumes: int = 0  # times the client resumed this stream on another controller replica


@dataclass
class Kill:
    at_s: float
    kind: str
    pid: int
    recovery_s: float | None = None


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    resumes: int = 0
    phase: str = "baseline"
    lock: threading.Lock = field(default_factory=threading.Lock)
    t0: float = field(default_factory=time.perf_counter)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


def _scaled_config(path: str, replicas: int):
    from relay_ray.serve.local import load_serve_file

    serve_file = load_serve_file(path)
    relay = serve_file.relay
    relay = relay.model_copy(update={
        "large": relay.large.model_copy(update={"num_replicas": replicas}),
        "small": relay.small.model_copy(update={"num_replicas": replicas}),
        "controller": relay.controller.model_copy(update={"num_replicas": replicas}),
    })
    return serve_file, relay


def _client_loop(run: Run, address: str, app: str, prompts: list[str], stop: threading.Event, seed: int,
                 max_new_tokens: int) -> None:
    import grpc

    from relay_ray.client import RelayClient, build_request
    from relay_ray.types import ChatMessage

    rng = random.Random(seed)
    with RelayClient(address, app, timeout_s=120) as client:
        while not stop.is_set():
            policy, params = MIX[rng.randrange(len(MIX))]
            prompt = prompts[rng.randrange(len(prompts))]
            run.add(_one(client, run.phase, policy, params, prompt, max_new_tokens, run.t0))
        with run.lock:
            run.resumes += client.num_resumes


def _one(client, phase: str, policy: str, params: dict, prompt: str, max_new_tokens: int, t0: float) -> Outcome:
    """One streamed greedy request and what the client saw."""
    import grpc

    from relay_ray.client import build_request
    from relay_ray.types import ChatMessage

    started, resumes_before = time.perf_counter(), client.num_resumes
    try:
        request = build_request([ChatMessage("user", prompt)], policy, params, max_new_tokens=max_new_tokens)
        final = list(client.generate_stream(request))[-1].final
        return Outcome(phase, policy, prompt, "OK", time.perf_counter() - started, final.text,
                       final.stats.num_migrations, round(started - t0, 1), client.num_resumes - resumes_before)
    except grpc.RpcError as exc:
        return Outcome(phase, policy, prompt, exc.code().name, time.perf_counter() - started,
                       start_s=round(started - t0, 1), resumes=client.num_resumes - resumes_before)


def reference_pass(run: Run, address: str, app: str, users: int, max_new_tokens: int) -> None:
    """Answer once, without faults, every (prompt, policy) the fault phase served that the
    baseline did not, so every answer under faults is compared with a fault-free one."""
    from concurrent.futures import ThreadPoolExecutor

    from relay_ray.client import RelayClient

    have = {(o.prompt, o.policy) for o in run.outcomes if o.phase == "baseline" and o.status == "OK"}
    missing = sorted({(o.prompt, o.policy) for o in run.outcomes if o.phase == "faults"} - have)
    params = dict(MIX)
    with RelayClient(address, app, timeout_s=120) as client, ThreadPoolExecutor(users) as pool:
        for outcome in pool.map(lambda pp: _one(client, "reference", pp[1], params[pp[1]], pp[0], max_new_tokens,
                                                run.t0), missing):
            run.add(outcome)


def _killer(run: Run, app: str, replicas: int, every_s: float, stop: threading.Event, t0: float,
            seed: int) -> None:
    from relay_ray.serve.replicas import replica_pids, wait_for_replicas

    rng = random.Random(seed)
    n = 0
    while not stop.wait(every_s):
        kind = KINDS[n % len(KINDS)]
        n += 1
        pids = replica_pids(app, kind)
        if len(pids) < replicas:  # still recovering from an earlier kill: skip this round
            continue
        victim = rng.choice(pids)
        os.kill(victim, signal.SIGKILL)
        kill = Kill(round(time.perf_counter() - t0, 1), kind, victim)
        run.kills.append(kill)

        def recover(kill: Kill = kill, killed_at: float = time.perf_counter()) -> None:
            pids = wait_for_replicas(app, kill.kind, replicas, timeout_s=300)
            alive = [p for p in pids if p != kill.pid]
            if len(alive) >= replicas:
                kill.recovery_s = round(time.perf_counter() - killed_at, 1)
        threading.Thread(target=recover, daemon=True).start()


def _percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summarize(run: Run) -> dict:
    reference = {}
    for o in run.outcomes:  # the fault-free answer of each (prompt, policy)
        if o.phase == "baseline" and o.status == "OK":
            reference.setdefault((o.prompt, o.policy), o.text)
    for o in run.outcomes:  # answers of the reference pass (faults over, replicas recovered)
        if o.phase == "reference" and o.status == "OK":
            reference.setdefault((o.prompt, o.policy), o.text)
    phases = {}
    for phase in ("baseline", "faults"):
        rows = [o for o in run.outcomes if o.phase == phase]
        ok = [o for o in rows if o.status == "OK"]
        failures: dict[str, int] = {}
        for o in rows:
            if o.status != "OK":
                failures[o.status] = failures.get(o.status, 0) + 1
        compared = [o for o in ok if (o.prompt, o.policy) in reference]
        phases[phase] = {
            "requests": len(rows), "ok": len(ok), "failures": failures,
            "answers_compared": len(compared),
            "answers_differing": sum(1 for o in compared if o.text != reference[(o.prompt, o.policy)]),
            "migrations": sum(o.migrations for o in ok),
            "latency_p50_s": round(_percentile([o.latency_s for o in ok], 50), 3),
            "latency_p95_s": round(_percentile([o.latency_s for o in ok], 95), 3),
        }
    slowest = sorted((o for o in run.outcomes if o.phase == "faults"), key=lambda o: -o.latency_s)[:10]
    return {"phases": phases, "stream_resumes": run.resumes, "kills": [asdict(k) for k in run.kills],
            "slowest": [{"start_s": o.start_s, "latency_s": round(o.latency_s, 1), "policy": o.policy,
                         "status": o.status, "migrations": o.migrations, "resumes": o.resumes,
                         "kills_during": [f"{k.kind}@{k.at_s}" for k in run.kills
                                          if o.start_s <= k.at_s <= o.start_s + o.latency_s]}
                        for o in slowest]}


def markdown(summary: dict, args: argparse.Namespace) -> str:
    lines = ["| phase | requests | ok | failures by status | answers differing / compared | migrations | "
             "p50 s | p95 s |", "|---|---|---|---|---|---|---|---|"]
    for phase, p in summary["phases"].items():
        failures = ", ".join(f"{k} {v}" for k, v in p["failures"].items()) or "0"
        lines.append(f"| {phase} | {p['requests']} | {p['ok']} | {failures} | {p['answers_differing']} / "
                     f"{p['answers_compared']} | {p['migrations']} | {p['latency_p50_s']} | {p['latency_p95_s']} |")
    lines += ["", f"Stream resumes on another controller replica: {summary['stream_resumes']}.", "",
              "| kill at s (since the run began) | replica kind | pid | recovery s |", "|---|---|---|---|"]
    for k in summary["kills"]:
        lines.append(f"| {k['at_s']} | {k['kind']} | {k['pid']} | {k['recovery_s']} |")
    lines += ["", "Slowest requests under faults:", "",
              "| start s | latency s | policy | status | migrations | resumes | kills during it |",
              "|---|---|---|---|---|---|---|"]
    for o in summary.get("slowest", []):
        lines.append(f"| {o['start_s']} | {o['latency_s']} | {o['policy']} | {o['status']} | {o['migrations']} | "
                     f"{o['resumes']} | {', '.join(o['kills_during']) or '-'} |")
    header = (f"Chaos run: {args.users} users, {args.baseline_s:.0f} s baseline, {args.duration_s:.0f} s with a "
              f"kill every {args.kill_every_s:.0f} s, {args.replicas} replicas per kind, config {args.config}.")
    return header + "\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", default="cluster/serve-local.yaml", help="Serve config file with one relay app")
    parser.add_argument("--users", type=int, default=8, help="concurrent streaming clients")
    parser.add_argument("--replicas", type=int, default=2, help="replicas per tier and of the controller")
    parser.add_argument("--baseline-s", type=float, default=60.0, help="fault-free phase length")
    parser.add_argument("--duration-s", type=float, default=300.0, help="phase with kills")
    parser.add_argument("--kill-every-s", type=float, default=15.0, help="seconds between kills (<= 20)")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--no-reference-pass", action="store_true",
                        help="compare only the answers whose (prompt, policy) the baseline also served")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/chaos", help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if args.replicas < 2:
        parser.error("--replicas must be >= 2 (a kill must leave a replica)")

    from ray import serve

    from relay_ray.quality.dataset import load_dataset
    from relay_ray.serve.builder import build_app
    from relay_ray.serve.local import start_serve, stop_local
    from relay_ray.serve.replicas import wait_for_replicas

    serve_file, relay = _scaled_config(args.config, args.replicas)
    items, _ = load_dataset("data/arith/dev.jsonl", limit=200)
    prompts = [item.prompt for item in items]
    start_serve(serve_file)
    try:
        app = serve_file.raw["applications"][0].get("name", "relay")
        serve.run(build_app(relay), name=app, route_prefix=serve_file.raw["applications"][0].get("route_prefix", "/"))
        for kind in KINDS:
            wait_for_replicas(app, kind, args.replicas)
        address = f"127.0.0.1:{serve_file.grpc_port}"
        run, stop = Run(), threading.Event()
        users = [threading.Thread(target=_client_loop, args=(run, address, app, prompts, stop, args.seed + i,
                                                             args.max_new_tokens)) for i in range(args.users)]
        for t in users:
            t.start()
        print(f"baseline: {args.baseline_s:.0f} s without faults", flush=True)
        time.sleep(args.baseline_s)
        run.phase = "faults"
        print(f"faults: {args.duration_s:.0f} s, a kill every {args.kill_every_s:.0f} s", flush=True)
        killer_stop = threading.Event()
        killer = threading.Thread(target=_killer, args=(run, app, args.replicas, args.kill_every_s, killer_stop,
                                                        run.t0, args.seed))
        killer.start()
        time.sleep(args.duration_s)
        killer_stop.set()
        killer.join()
        stop.set()
        for t in users:
            t.join(timeout=180)
        time.sleep(5)  # let the last recovery watchers finish
        if not args.no_reference_pass:
            for kind in KINDS:
                wait_for_replicas(app, kind, args.replicas)
            print("reference pass: a fault-free answer for every (prompt, policy) served under faults", flush=True)
            reference_pass(run, address, app, args.users, args.max_new_tokens)
        summary = summarize(run)
    finally:
        stop_local()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    report = markdown(summary, args)
    out.with_suffix(".md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
