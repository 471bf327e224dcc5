"""``relay-ray plan``: capacity curves and demand from Locust, a replica/GPU plan, a report.

    relay-ray plan --config cluster/serve-capacity-local.yaml --mix "large-only:1,fixed-ratio:2,small-only:1" \
        --target-rps 2 --slo-p95-s 6 --validate --out out/plan

1. measure (unless ``--measurements``): each tier's capacity curve (Locust step load of
   ``large-only`` / ``small-only`` requests), then the mix at one user (per-request demand
   and the switch overhead); saved as ``measurements.json``;
2. predict the deployed replicas' maximum load at the SLO and plan replicas/GPUs for the
   target with headroom;
3. ``--validate``: a Locust step load of the mix on the same deployment; the measured maximum
   load at the SLO against the prediction;
4. write ``plan.md``, ``curves.png``, ``replicas.png`` (and the raw request CSVs) to ``--out``.

The relay is started from ``--config`` on a local Ray instance, or ``--address`` names a
relay already running (e.g. on a cluster: the same command measures GPU tiers there).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

from relay_ray.deploy.capacity import (
    TIERS,
    CurvePoint,
    PolicyDemand,
    TierCurve,
    TierUnits,
    max_rate_at_slo,
    plan,
    switch_overhead_s,
)
from relay_ray.deploy.loadrun import StepStats, run_step_load, step_stats
from relay_ray.deploy.measurements import Measurements
from relay_ray.errors import RelayInputError

SINGLE_TIER_POLICY = {"large": "large-only", "small": "small-only"}


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise RelayInputError("users", f"{text!r}: use a comma-separated list of user counts >= 1")
    return values


def parse_mix(text: str) -> dict[str, float]:
    from relay_ray.policies import REGISTRY

    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        if name not in REGISTRY:
            raise RelayInputError("mix", f"unknown policy {name!r}; one of {sorted(REGISTRY)}")
        try:
            mix[name] = float(weight or 1)
        except ValueError:
            raise RelayInputError("mix", f"{part!r}: use policy:weight") from None
    if not mix or any(w <= 0 for w in mix.values()):
        raise RelayInputError("mix", f"{text!r}: use policy:weight,policy:weight with weights > 0")
    return mix


def _cores(binding: str | None) -> set[int]:
    """CPU cores of a VLLM_CPU_OMP_THREADS_BIND value ("0", "0-3", "0|1", "0,2")."""
    cores: set[int] = set()
    for part in filter(None, (binding or "").replace("|", ",").split(",")):
        lo, _, hi = part.partition("-")
        if lo.strip().isdigit():
            cores.update(range(int(lo), int(hi or lo) + 1))
    return cores


def tier_units(config, tier: str) -> TierUnits:
    """GPUs per replica on GPU tiers; on CPU tiers the cores its replicas are bound to, shared."""
    from relay_ray.deploy.placement import placements

    cfg = getattr(config, tier)
    placement = next(p for p in placements(config) if p.name == tier)
    if placement.gpus_per_replica > 0:
        return TierUnits("GPU", placement.gpus_per_replica)
    n = cfg.num_replicas
    binds = cfg.cpu_threads_bind_by_replica or (cfg.cpu_threads_bind,)
    cores = set().union(*(_cores(binds[r % len(binds)]) for r in range(n)))
    return TierUnits("core", (len(cores) or 1) / n)


def deployed_replicas(config) -> dict[str, int]:
    out = {}
    for tier in TIERS:
        cfg = getattr(config, tier)
        out[tier] = cfg.autoscaling.min_replicas if cfg.autoscaling else cfg.num_replicas
    return out


def measure_curve(address: str, app: str, tier: str, replicas: int, users: list[int], step_s: float,
                  warmup_s: float, max_new_tokens: int, out: Path) -> tuple[TierCurve, list[StepStats]]:
    steps = [(u, step_s) for u in users]
    rows = run_step_load(address, f"{SINGLE_TIER_POLICY[tier]}:1", steps, out / f"curve_{tier}_requests.csv",
                         max_new_tokens, app=app, log=out / "locust.log")
    stats = step_stats(rows, steps, warmup_s)
    points = tuple(CurvePoint(s.users, s.tier_tokens_per_s[tier], s.s_per_token_p95, s.s_per_token_mean,
                              s.latency_requests) for s in stats if s.latency_requests)
    return TierCurve(tier, replicas, points), stats


def measure_demand(address: str, app: str, mix: dict[str, float], params: str, seconds: float, warmup_s: float,
                   max_new_tokens: int, out: Path) -> list[PolicyDemand]:
    mix_text = ",".join(f"{p}:{w:g}" for p, w in mix.items())
    rows = run_step_load(address, mix_text, [(1, seconds)], out / "demand_requests.csv", max_new_tokens,
                         policy_params=params, app=app, log=out / "locust.log")
    begin = min((r.start_s for r in rows), default=0.0)
    rows = [r for r in rows if r.ok and r.start_s >= begin + warmup_s]
    demand = []
    for policy, weight in mix.items():
        mine = [r for r in rows if r.policy == policy]
        if not mine:
            raise RelayInputError("demand", f"no successful {policy} request in {seconds:g} s: run longer")
        mean = lambda f: sum(f(r) for r in mine) / len(mine)  # noqa: E731
        demand.append(PolicyDemand(
            policy, weight,
            generated={"large": mean(lambda r: r.large_generated), "small": mean(lambda r: r.small_generated)},
            prefill={"large": mean(lambda r: r.large_prefill_tokens), "small": mean(lambda r: r.small_prefill_tokens)},
            switches=mean(lambda r: r.switches), latency_s=mean(lambda r: r.latency_s), requests=len(mine)))
    return demand


def measured_max_at_slo(stats: list[StepStats], slo_p95_s: float) -> tuple[float, str]:
    """(requests/s where the worst policy's p95 crosses the SLO, how it was found)."""
    ordered = sorted(stats, key=lambda s: s.users)
    worst = [max(s.policy_p95_s.values()) if s.policy_p95_s else math.inf for s in ordered]
    if not ordered or worst[0] > slo_p95_s:
        return 0.0, "the lightest step already misses the SLO"
    for i in range(1, len(ordered)):
        if worst[i] > slo_p95_s:
            a, b = ordered[i - 1], ordered[i]
            f = (slo_p95_s - worst[i - 1]) / (worst[i] - worst[i - 1])
            rate = a.requests_per_s + f * max(b.requests_per_s - a.requests_per_s, 0.0)
            return rate, f"interpolated between {a.users} and {b.users} users"
    return ordered[-1].requests_per_s, f"lower bound: {ordered[-1].users} users still meet the SLO"


def _start(config_path: str):
    from relay_ray.serve.local import load_serve_file, start_local

    serve_file = load_serve_file(config_path)
    started = time.perf_counter()
    print(f"[plan] starting the relay from {config_path} on a local Ray instance ...", flush=True)
    start_local(serve_file)
    print(f"[plan] ready in {time.perf_counter() - started:.0f} s", flush=True)
    return serve_file, f"127.0.0.1:{serve_file.grpc_port}"


def run(args: argparse.Namespace) -> int:
    from relay_ray.deploy import plan_report
    from relay_ray.serve.local import load_serve_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    serve_file = load_serve_file(args.config)
    config = serve_file.relay
    replicas = deployed_replicas(config)
    units = {t: tier_units(config, t) for t in TIERS}
    mix = parse_mix(args.mix)
    json.loads(args.policy_params)  # fail early on bad JSON
    started_here = False
    address = args.address
    curve_stats: dict[str, list[StepStats]] = {}
    validation: list[StepStats] = []
    try:
        if args.measurements:
            measurements = Measurements.load(args.measurements)
            missing = set(mix) - {d.policy for d in measurements.demand}
            if missing:
                raise RelayInputError("mix", f"{sorted(missing)} not measured in {args.measurements}")
            demand = [PolicyDemand(**{**d.__dict__, "weight": mix[d.policy]})
                      for d in measurements.demand if d.policy in mix]
            measurements = Measurements(measurements.curves, demand, measurements.overhead_s,
                                        measurements.max_new_tokens, measurements.source, measurements.context)
        else:
            if not address:
                _, address = _start(args.config)
                started_here = True
            app = args.app or ""
            curves = {}
            for tier, users in (("large", _ints(args.users_large)), ("small", _ints(args.users_small))):
                print(f"[plan] {tier} tier capacity curve: users {users}, {args.step_s:g} s each", flush=True)
                curves[tier], curve_stats[tier] = measure_curve(address, app, tier, replicas[tier], users,
                                                                args.step_s, args.warmup_s, args.max_new_tokens, out)
            print(f"[plan] demand of the mix at one user ({args.demand_s:g} s)", flush=True)
            demand = measure_demand(address, app, mix, args.policy_params, args.demand_s, args.warmup_s,
                                    args.max_new_tokens, out)
            where = f"measured with Locust on {platform.node()} ({args.config})"
            measurements = Measurements(curves, demand, switch_overhead_s(demand, curves), args.max_new_tokens,
                                        {"large": where, "small": where, "demand": where},
                                        {"config": args.config, "mix": args.mix, "policy_params": args.policy_params,
                                         "machine": f"{platform.node()}, {platform.processor() or platform.machine()}",
                                         "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
            measurements.save(out / "measurements.json")
        m = measurements
        predicted = max_rate_at_slo(m.demand, m.curves, replicas, m.overhead_s, args.slo_p95_s)
        print(f"[plan] predicted maximum load at p95 <= {args.slo_p95_s:g} s for {replicas}: {predicted:.3f} req/s",
              flush=True)
        target_plan = None
        if args.target_rps:
            target_plan = plan(m.demand, m.curves, units, m.overhead_s, args.target_rps, args.slo_p95_s, args.headroom)
        measured = None
        if args.validate:
            if not address:
                _, address = _start(args.config)
                started_here = True
            users = _ints(args.users_validate)
            steps = [(u, args.validate_step_s) for u in users]
            print(f"[plan] validation: the mix at users {users}, {args.validate_step_s:g} s each", flush=True)
            mix_text = ",".join(f"{p}:{w:g}" for p, w in mix.items())
            rows = run_step_load(address, mix_text, steps, out / "validate_requests.csv", m.max_new_tokens,
                                 policy_params=args.policy_params, app=args.app or "", log=out / "locust.log")
            validation = step_stats(rows, steps, args.warmup_s)
            measured = measured_max_at_slo(validation, args.slo_p95_s)
            print(f"[plan] measured maximum load at the SLO: {measured[0]:.3f} req/s ({measured[1]})", flush=True)
    finally:
        if started_here:
            from relay_ray.serve.local import stop_local

            stop_local()
    report = plan_report.Report(args=vars(args), measurements=m, replicas=replicas, units=units,
                                predicted_max_rps=predicted, plan=target_plan, curve_stats=curve_stats,
                                validation=validation, measured=measured)
    plan_report.write(report, out)
    print(f"[plan] wrote {out / 'plan.md'}, {out / 'curves.png'}, {out / 'replicas.png'}")
    if measured is not None and predicted > 0:
        error = measured[0] / predicted - 1
        print(f"[plan] measured / predicted - 1 = {100 * error:+.1f}%")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="capacity curves and demand from Locust, replicas/GPUs for a target load")
    p.add_argument("--config", default="cluster/serve-capacity-local.yaml",
                   help="Serve config of the deployment measured (and planned: GPUs per replica)")
    p.add_argument("--address", default=None, help="a running relay's gRPC address (default: start --config here)")
    p.add_argument("--app", default=None, help="Serve application name (when several run)")
    p.add_argument("--measurements", default=None, help="plan from this measurements.json instead of measuring")
    p.add_argument("--mix", default="large-only:1,fixed-ratio:2,small-only:1", help="policy:weight list")
    p.add_argument("--policy-params", default='{"fixed-ratio": {"large_tokens": 4, "small_tokens": 12}}',
                   help="JSON: parameters per policy of the mix")
    p.add_argument("--max-new-tokens", type=int, default=32, help="output tokens per request (EOS ignored)")
    p.add_argument("--users-large", default="1,2,4,8,16", help="step-load user counts, large tier curve")
    p.add_argument("--users-small", default="1,2,4,8,16", help="step-load user counts, small tier curve")
    p.add_argument("--step-s", type=float, default=40.0, help="seconds per curve step")
    p.add_argument("--warmup-s", type=float, default=8.0, help="seconds at the start of a step not measured")
    p.add_argument("--demand-s", type=float, default=60.0, help="seconds of the mix at one user (demand)")
    p.add_argument("--target-rps", type=float, default=None, help="target load, requests/s")
    p.add_argument("--slo-p95-s", type=float, default=20.0, help="p95 latency SLO per policy, seconds")
    p.add_argument("--headroom", type=float, default=0.2, help="plan for target x (1 + headroom)")
    p.add_argument("--validate", action="store_true", help="measure the mix's maximum load at the SLO")
    p.add_argument("--users-validate", default="1,2,4,6,8,12,16", help="step-load user counts, validation")
    p.add_argument("--validate-step-s", type=float, default=60.0, help="seconds per validation step")
    p.add_argument("--out", default="out/plan", help="report folder")
    p.set_defaults(func=run)

