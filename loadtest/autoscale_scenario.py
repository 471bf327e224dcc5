"""Autoscaling scenario on a local Ray instance: each tier scales on its own demand.

Phases: small-heavy Locust load (the small tier should grow, the large stay), then
large-heavy load (replicas move the other way), then no load until both tiers are back at
their minimum. Replica counts are sampled every ``--sample-s`` and written as JSON, plus
an SVG plot.

    .venv/bin/python loadtest/autoscale_scenario.py --phase-s 90 --out out/autoscale.json \
        --plot docs/autoscaling.svg
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = (("small-heavy", "small-only:1"), ("large-heavy", "large-only:1"), ("idle", None))


def scaling_tier(model: str, bind: str, max_replicas: int) -> dict:
    return {
        "model": str(ROOT / "models" / model), "dtype": "float32", "max_model_len": 512, "block_size": 32,
        "kv_cache_space_gib": 1, "cpu_threads_bind": bind, "max_num_seqs": 8,
        "autoscaling": {"min_replicas": 1, "max_replicas": max_replicas, "target_inflight_segments": 2,
                        "upscale_delay_s": 2, "downscale_delay_s": 12, "look_back_period_s": 4,
                        "hysteresis": 0.25},
    }


ACTIVE_STATES = ("STARTING", "UPDATING", "RECOVERING", "RUNNING")


def replica_counts(app: str) -> dict[str, tuple[int, int]]:
    """Per deployment: (replicas Serve is running or starting, replicas RUNNING)."""
    from ray import serve

    deployments = serve.status().applications[app].deployments
    return {
        name: (sum(int(d.replica_states.get(s, 0)) for s in ACTIVE_STATES), int(d.replica_states.get("RUNNING", 0)))
        for name, d in deployments.items()
    }


def scaled_as_expected(phase: str, counts: dict[str, tuple[int, int]], timeline: list[dict]) -> bool:
    """Whether a load phase shows its expected move: small-heavy grows the small tier with the
    large at one replica; large-heavy grows the large tier and shrinks the small one below its
    small-heavy peak."""
    large, small = counts.get("LargeTier", (0, 0))[0], counts.get("SmallTier", (0, 0))[0]
    if phase == "small-heavy":
        return small >= 2 and large == 1
    small_peak = max((p["small"] for p in timeline if p["phase"] == "small-heavy"), default=0)
    return large >= 2 and small < small_peak


def run(args: argparse.Namespace) -> dict:
    # Replicas push their metrics every second instead of every 10 s (set before Ray starts).
    os.environ["RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] = "1"
    os.environ["RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray
    from ray import serve

    from relay_ray.config import RelayConfig
    from relay_ray.serve.builder import SERVICER_FUNCTIONS, build_app
    from relay_ray.serve.local import mark_session, reap_session

    mark_session()
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.http_port},
                grpc_options={"port": args.grpc_port, "grpc_servicer_functions": list(SERVICER_FUNCTIONS)})
    config = RelayConfig(large=scaling_tier("demo-small", "0", args.max_large),
                         small=scaling_tier("demo-small", "1", args.max_small),
                         controller={"max_new_tokens_limit": 256})
    serve.run(build_app(config), name="scaling", route_prefix="/")
    timeline, started = [], time.monotonic()

    def sample(phase: str) -> dict[str, tuple[int, int]]:
        counts = replica_counts("scaling")
        large, small = counts.get("LargeTier", (0, 0)), counts.get("SmallTier", (0, 0))
        timeline.append({"t_s": round(time.monotonic() - started, 1), "phase": phase,
                         "large": large[0], "small": small[0], "large_running": large[1],
                         "small_running": small[1]})
        print(f"[autoscale] {timeline[-1]}", flush=True)
        return counts

    try:
        for phase, mix in PHASES:
            if mix is None:
                deadline = time.monotonic() + args.idle_timeout_s
                while time.monotonic() < deadline:
                    counts = sample(phase)
                    if counts.get("LargeTier") == (1, 1) and counts.get("SmallTier") == (1, 1):
                        break
                    time.sleep(args.sample_s)
                continue
            locust = subprocess.Popen(
                [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless",
                 "-u", str(args.users), "-r", str(args.users), "-t", f"{args.phase_s}s",
                 "--host", f"127.0.0.1:{args.grpc_port}", "--policy-mix", mix, "--max-new-tokens", "48",
                 "--only-summary", "--stop-timeout", "20"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
            )
            seen_since = None
            while locust.poll() is None:
                counts = sample(phase)
                if args.until_scaled and scaled_as_expected(phase, counts, timeline):
                    seen_since = seen_since or time.monotonic()
                    if time.monotonic() - seen_since >= args.hold_s:
                        locust.terminate()  # our own child: the phase has shown what it is for
                else:
                    seen_since = None
                time.sleep(args.sample_s)
            locust.wait(timeout=60)
    finally:
        serve.shutdown()
        ray.shutdown()
        reap_session()
    return {"timeline": timeline, "config": config.model_dump(mode="json"), "phase_s": args.phase_s,
            "users": args.users}


def svg_plot(timeline: list[dict], width: int = 720, height: int = 260) -> str:
    """A step plot of replicas per tier over time, with phase bands."""
    t_max = max(p["t_s"] for p in timeline) or 1
    y_max = max(max(p["large"], p["small"]) for p in timeline) + 1
    x = lambda t: 50 + (width - 70) * t / t_max  # noqa: E731
    y = lambda v: height - 30 - (height - 50) * v / y_max  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>']
    colors = {"small-heavy": "#e0f2f1", "large-heavy": "#f3e5f5", "idle": "#f5f5f5"}
    start = 0
    for i, p in enumerate(timeline + [None]):
        if p is None or p["phase"] != timeline[start]["phase"]:
            t0, t1 = timeline[start]["t_s"], timeline[i - 1]["t_s"] if p is None else p["t_s"]
            phase = timeline[start]["phase"]
            parts.append(f'<rect x="{x(t0):.1f}" y="15" width="{x(t1) - x(t0):.1f}" height="{height - 45}" '
                         f'fill="{colors[phase]}"/><text x="{x(t0) + 4:.1f}" y="27">{phase}</text>')
            start = i
    for v in range(y_max + 1):
        parts.append(f'<text x="30" y="{y(v) + 4:.1f}">{v}</text><line x1="45" x2="{width - 20}" y1="{y(v):.1f}" '
                     f'y2="{y(v):.1f}" stroke="#ddd"/>')
    for key, color, dash in (("large", "#8e24aa", ""), ("small", "#00897b", ""),
                             ("large_running", "#8e24aa", ' stroke-dasharray="4 3"'),
                             ("small_running", "#00897b", ' stroke-dasharray="4 3"')):
        points = []
        for a, b in zip(timeline, timeline[1:] + [timeline[-1]]):
            points += [f"{x(a['t_s']):.1f},{y(a[key]):.1f}", f"{x(b['t_s']):.1f},{y(a[key]):.1f}"]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{" ".join(points)}"/>')
    parts.append(f'<text x="{width - 330}" y="{height - 8}">solid: target replicas, dashed: RUNNING</text>'
                 f'<text x="{width - 130}" y="{height - 8}" fill="#8e24aa">large</text>'
                 f'<text x="{width - 90}" y="{height - 8}" fill="#00897b">small</text>'
                 f'<text x="50" y="{height - 8}">seconds 0 .. {t_max:.0f}</text></svg>')
    return "".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase-s", type=int, default=90, help="seconds of each load phase")
    parser.add_argument("--idle-timeout-s", type=int, default=120, help="max seconds to wait for scale-down")
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument("--until-scaled", action="store_true",
                        help="end a load phase once its expected replica move has held for --hold-s")
    parser.add_argument("--hold-s", type=float, default=6.0, help="see --until-scaled")
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--max-large", type=int, default=2)
    parser.add_argument("--max-small", type=int, default=3)
    parser.add_argument("--grpc-port", type=int, default=9100)
    parser.add_argument("--http-port", type=int, default=8100)
    parser.add_argument("--out", default="out/autoscale.json")
    parser.add_argument("--plot", default=None, help="write an SVG plot here")
    args = parser.parse_args()
    result = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    if args.plot:
        Path(args.plot).write_text(svg_plot(result["timeline"]))
    print(f"[autoscale] wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
