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
import platform
import time
from pathlib import Path

from relay_ray.deploy.capacity import (
    TIERS,
    Plan,
    PolicyDemand,
    TierUnits,
    max_rate_at_slo,
    plan,
    switch_overhead_s,
)
from relay_ray.deploy.loadrun import StepStats, run_step_load, step_stats
from relay_ray.deploy.measurements import Measurements
from relay_ray.deploy.placement import deployed_replicas, tier_units
from relay_ray.deploy.plan_measure import measure_curve, measure_demand, measured_max_at_slo, mix_text
from relay_ray.errors import RelayInputError


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


class _Relay:
    """The relay measured: ``--address``, or one started from ``--config`` on a local Ray
    instance the first time ``address()`` is asked for; leaving the ``with`` block stops a relay
    started here (and only that one)."""

    def __init__(self, args: argparse.Namespace):
        self._config = args.config
        self._address = args.address
        self._started_here = False

    def address(self) -> str:
        if not self._address:
            from relay_ray.serve.local import load_serve_file, start_local

            serve_file = load_serve_file(self._config)
            started = time.perf_counter()
            print(f"[plan] starting the relay from {self._config} on a local Ray instance ...", flush=True)
            start_local(serve_file)
            print(f"[plan] ready in {time.perf_counter() - started:.0f} s", flush=True)
            self._address, self._started_here = f"127.0.0.1:{serve_file.grpc_port}", True
        return self._address

    def __enter__(self) -> _Relay:
        return self

    def __exit__(self, *exc) -> None:
        if self._started_here:
            from relay_ray.serve.local import stop_local

            stop_local()


def _measurements_from_file(path: str, mix: dict[str, float]) -> Measurements:
    """``--measurements``: the saved measurements, demand restricted to the mix's policies and
    reweighted by it; RelayInputError if a policy of the mix was not measured."""
    measurements = Measurements.load(path)
    missing = set(mix) - {d.policy for d in measurements.demand}
    if missing:
        raise RelayInputError("mix", f"{sorted(missing)} not measured in {path}")
    demand = [PolicyDemand(**{**d.__dict__, "weight": mix[d.policy]})
              for d in measurements.demand if d.policy in mix]
    return Measurements(measurements.curves, demand, measurements.overhead_s,
                        measurements.max_new_tokens, measurements.source, measurements.context)


def _measure(args: argparse.Namespace, address: str, mix: dict[str, float], replicas: dict[str, int],
             out: Path) -> tuple[Measurements, dict[str, list[StepStats]]]:
    """Step 1: each tier's capacity curve, then the mix's demand at one user, on the relay at
    ``address``; the measurements (saved to ``out/measurements.json``) and each curve's steps."""
    app = args.app or ""
    curves, curve_stats = {}, {}
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
    return measurements, curve_stats


def _predict(args: argparse.Namespace, m: Measurements, replicas: dict[str, int],
             units: dict[str, TierUnits]) -> tuple[float, Plan | None]:
    """Step 2: (the deployed replicas' predicted maximum requests/s at the SLO, the replica/GPU
    plan for ``--target-rps`` or None without a target)."""
    predicted = max_rate_at_slo(m.demand, m.curves, replicas, m.overhead_s, args.slo_p95_s)
    print(f"[plan] predicted maximum load at p95 <= {args.slo_p95_s:g} s for {replicas}: {predicted:.3f} req/s",
          flush=True)
    target_plan = None
    if args.target_rps:
        target_plan = plan(m.demand, m.curves, units, m.overhead_s, args.target_rps, args.slo_p95_s, args.headroom)
    return predicted, target_plan


def _validate(args: argparse.Namespace, address: str, mix: dict[str, float], m: Measurements,
              out: Path) -> tuple[list[StepStats], tuple[float, str]]:
    """Step 3 (``--validate``): a step load of the mix on the relay at ``address``; its steps and
    the measured (maximum requests/s at the SLO, how it was found)."""
    users = _ints(args.users_validate)
    steps = [(u, args.validate_step_s) for u in users]
    print(f"[plan] validation: the mix at users {users}, {args.validate_step_s:g} s each", flush=True)
    rows = run_step_load(address, mix_text(mix), steps, out / "validate_requests.csv", m.max_new_tokens,
                         policy_params=args.policy_params, app=args.app or "", log=out / "locust.log")
    validation = step_stats(rows, steps, args.warmup_s)
    measured = measured_max_at_slo(validation, args.slo_p95_s)
    print(f"[plan] measured maximum load at the SLO: {measured[0]:.3f} req/s ({measured[1]})", flush=True)
    return validation, measured


def _write_report(report, out: Path) -> None:
    """Step 4: ``plan.md`` and the figures in ``out``; the prediction error when validated."""
    from relay_ray.deploy import plan_report

    plan_report.write(report, out)
    print(f"[plan] wrote {out / 'plan.md'}, {out / 'curves.png'}, {out / 'replicas.png'}")
    if report.measured is not None and report.predicted_max_rps > 0:
        error = report.measured[0] / report.predicted_max_rps - 1
        print(f"[plan] measured / predicted - 1 = {100 * error:+.1f}%")


def run(args: argparse.Namespace) -> int:
    """``relay-ray plan``: measure (or load) the measurements, predict, plan, validate, report."""
    from relay_ray.deploy import plan_report
    from relay_ray.serve.local import load_serve_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_serve_file(args.config).relay
    replicas = deployed_replicas(config)
    units = {t: tier_units(config, t) for t in TIERS}
    mix = parse_mix(args.mix)
    json.loads(args.policy_params)  # fail early on bad JSON
    curve_stats: dict[str, list[StepStats]] = {}
    validation: list[StepStats] = []
    measured = None
    with _Relay(args) as relay:
        if args.measurements:
            m = _measurements_from_file(args.measurements, mix)
        else:
            m, curve_stats = _measure(args, relay.address(), mix, replicas, out)
        predicted, target_plan = _predict(args, m, replicas, units)
        if args.validate:
            validation, measured = _validate(args, relay.address(), mix, m, out)
    _write_report(plan_report.Report(args=vars(args), measurements=m, replicas=replicas, units=units,
                                     predicted_max_rps=predicted, plan=target_plan, curve_stats=curve_stats,
                                     validation=validation, measured=measured), out)
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

