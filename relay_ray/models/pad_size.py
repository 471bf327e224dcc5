"""Size the cost-scaled large model for *this* machine: ~19x arith-small's per-token decode time.

The per-token cost of a padded bf16 model depends on the CPU: the committed default
(:data:`~relay_ray.models.pad.SCALED_SPEC`, width 1024) measured 18.4x arith-small on a CPU
without bf16 arithmetic but 11.4x on one with ``avx512_bf16`` (docs/quality.md, "Sizing the
pad per machine"). ``python -m relay_ray.models.pad_size`` (``make scaled-models``) measures
instead of guessing:

1. pad ``arith-large`` to the current width (MLP width 3x, :data:`SCALED_SPEC`'s extra layers);
2. serve ``--config`` (``cluster/serve-scaled.yaml``: the candidate in bf16 on core 0,
   arith-small in fp32 on core 1) in Ray Serve and time each tier's decode step as
   ``relay-ray bench`` does (large-only and small-only requests at c=1; :func:`served_timer`);
3. accept the width when the ratio is within ``tolerance`` of ``target_ratio``; otherwise
   predict the next width from the excess cost's power law in the width (:func:`next_width`)
   and go back to 1, at most ``max_rounds`` times; the closest width measured wins.

The chosen model goes to ``--out`` with its measurements in ``build-spec.json``
(``"calibration"``). It takes 2-4 minutes; run it alone on the machine (under the heavy lock).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
from contextlib import contextmanager
from pathlib import Path

from relay_ray.models.pad import SCALED_SPEC, SPEC_FILE, PadSpec, pad_model

TARGET_RATIO = 19.0  # Qwen3-32B vs Qwen3-1.7B per-token decode cost
# Excess cost (large step minus small step) grows about as width**1.6 here: 1024 -> 2048
# took it from 18.9 to 56.6 ms on the bf16 CPU (docs/quality.md); refit after two rounds.
DEFAULT_EXPONENT = 1.6
WIDTH_STEP = 128  # a multiple of arith-large's head size (64)
MIN_WIDTH, MAX_WIDTH = 256, 4096
PROMPT_TOKENS = 32
SMALL_REQUESTS_FACTOR = 3  # the small tier is timed over this many times the large tier's requests


def next_width(width: int, ratio: float, target: float, exponent: float = DEFAULT_EXPONENT) -> int:
    """The width whose ratio should be ``target``, given ``ratio`` measured at ``width``.

    Model: ``large_step / small_step - 1`` (the excess cost in small steps) is proportional to
    ``width ** exponent``; the result is rounded to :data:`WIDTH_STEP` and clamped.
    """
    if ratio <= 1.0 or target <= 1.0:
        raise ValueError(f"ratios must exceed 1 (measured {ratio:.2f}, target {target:.2f})")
    wanted = width * ((target - 1.0) / (ratio - 1.0)) ** (1.0 / exponent)
    rounded = int(round(wanted / WIDTH_STEP)) * WIDTH_STEP
    return max(MIN_WIDTH, min(MAX_WIDTH, rounded))


def fitted_exponent(a: tuple[int, float], b: tuple[int, float]) -> float:
    """The power-law exponent through two (width, ratio) points, clamped to [1, 2.5]."""
    (wa, ra), (wb, rb) = a, b
    if wa == wb or ra <= 1.0 or rb <= 1.0:
        return DEFAULT_EXPONENT
    return min(2.5, max(1.0, math.log((rb - 1.0) / (ra - 1.0)) / math.log(wb / wa)))


def bracket_exponent(rounds: list[dict], target: float) -> float:
    """The exponent fitted between the closest measured widths below and above ``target``
    (``rounds``: dicts with ``hidden_size`` and ``ratio``); the default without both."""
    below = [r for r in rounds if r["ratio"] < target]
    above = [r for r in rounds if r["ratio"] >= target]
    if not below or not above:
        return DEFAULT_EXPONENT
    low = max(below, key=lambda r: r["ratio"])
    high = min(above, key=lambda r: r["ratio"])
    return fitted_exponent((low["hidden_size"], low["ratio"]), (high["hidden_size"], high["ratio"]))


def spec_for_width(width: int) -> PadSpec:
    """:data:`SCALED_SPEC`'s shape at ``width``: MLP width 3x, the same extra layers."""
    ratio = SCALED_SPEC.intermediate_size // SCALED_SPEC.hidden_size
    return PadSpec(width, ratio * width, SCALED_SPEC.extra_layers, SCALED_SPEC.seed)


@contextmanager
def served_timer(config_file: str, num_tokens: int, num_requests: int):
    """Serve on this machine; yields ``measure(model) -> (large, small) ms per token``.

    ``measure`` deploys ``config_file``'s relay with its large model replaced by ``model`` and
    runs ``relay-ray bench``'s single-tier scenarios at c=1 (large-only, then small-only;
    ``num_requests`` greedy requests of ``num_tokens`` tokens each for the large tier and
    :data:`SMALL_REQUESTS_FACTOR` times as many for the small one, EOS ignored, fresh prompts):
    the per-token decode time is the bench's (:class:`~relay_ray.bench.report.TierCost`).
    """
    from relay_ray.bench.console import measure_at_normal_priority
    from relay_ray.bench.report import TierCost
    from relay_ray.bench.runner import run_scenario
    from relay_ray.bench.scenarios import LARGE_ONLY, SMALL_ONLY
    from relay_ray.bench.targets import Target, deploy
    from relay_ray.client import RelayClient, build_request
    from relay_ray.serve.local import load_serve_file, start_serve, stop_local

    serve_file = load_serve_file(Path(config_file))
    relay = serve_file.relay
    prompt_offset = 0

    def measure(model: str) -> tuple[float, float]:
        nonlocal prompt_offset
        config = relay.model_copy(update={"large": relay.large.model_copy(update={"model": model})})
        deploy(Target("sizing", config, [LARGE_ONLY, SMALL_ONLY]))
        costs = []
        with RelayClient(f"127.0.0.1:{serve_file.grpc_port}", timeout_s=600) as client:
            client.wait_ready()
            for policy in ("large-only", "small-only", "small-only"):
                client.generate(build_request("warm up the tiers", policy, {}, max_new_tokens=64))
            # The small tier's served cost is the noisy term (1.6-2.4 ms per token in rounds
            # minutes apart) and its requests are cheap, so it gets more of them.
            for scenario, large, count in ((LARGE_ONLY, True, num_requests),
                                           (SMALL_ONLY, False, SMALL_REQUESTS_FACTOR * num_requests)):
                run = run_scenario(client, scenario, 1, count, num_tokens, prompt_offset=prompt_offset)
                prompt_offset += count
                costs.append(TierCost.of(run, large).ms_per_token)
        return costs[0], costs[1]

    measure_at_normal_priority()
    start_serve(serve_file)
    try:
        yield measure
    finally:
        stop_local()


def _cpu() -> tuple[str, bool, bool]:
    """(the CPU's model name, whether it has bf16 vector arithmetic: ``avx512_bf16``, whether it
    exposes the bf16 matrix unit: ``amx_bf16``). The matrix unit is what makes the padded large
    model's prefill cheap: without it a handoff's uncached tokens cost 1.8-6.7 ms each on the
    cores measured so far, 0.06-0.12 of a decode step (docs/benchmarks.md, "Item 3: on a CPU
    without a matrix unit")."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown", False, False
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor() or "unknown")
    return name, "avx512_bf16" in info, "amx_bf16" in info


def calibrate(src: Path, config_file: str, out: Path, target: float, tolerance: float, max_rounds: int,
              num_tokens: int, start_width: int, num_requests: int = 3) -> dict:
    """Pad, time and re-pad until the ratio is within ``tolerance`` (relative) of ``target``."""
    from relay_ray.serve.local import load_serve_file

    scratch = out.with_name(out.name + ".sizing")
    shutil.rmtree(scratch, ignore_errors=True)
    small = load_serve_file(Path(config_file)).relay.small.model
    rounds: list[dict] = []
    width, exponent = start_width, DEFAULT_EXPONENT
    with served_timer(config_file, num_tokens, num_requests) as measure:
        for index in range(max_rounds):
            candidate = scratch / str(width)
            build = pad_model(src, candidate, spec_for_width(width))
            large_ms, small_ms = measure(str(candidate.resolve()))
            rounds.append({"hidden_size": width, "num_parameters": build["num_parameters"],
                           "large_ms_per_token": round(large_ms, 3), "small_ms_per_token": round(small_ms, 3)})
            # the small model is the same every round: its fastest measurement is its cost
            small_ms = min(r["small_ms_per_token"] for r in rounds)
            for r in rounds:
                r["ratio"] = round(r["large_ms_per_token"] / small_ms, 2)
            print(f"round {index + 1}/{max_rounds}: width {width} ({build['num_parameters'] / 1e6:.0f} M): "
                  f"{large_ms:.2f} / {small_ms:.2f} ms per token = {large_ms / small_ms:.1f}x (target {target:g}x)",
                  flush=True)
            if abs(large_ms / small_ms / target - 1.0) <= tolerance:
                break
            proposal = next_width(width, large_ms / small_ms, target, bracket_exponent(rounds, target))
            if any(r["hidden_size"] == proposal for r in rounds):
                break  # the step is too coarse to get closer
            width = proposal
    best = min(rounds, key=lambda r: abs(math.log(r["ratio"] / target)))
    shutil.rmtree(out, ignore_errors=True)
    (scratch / str(best["hidden_size"])).rename(out)
    shutil.rmtree(scratch, ignore_errors=True)
    spec = json.loads((out / SPEC_FILE).read_text())
    cpu, bf16, amx = _cpu()
    spec["calibration"] = {"target_ratio": target, "tolerance": tolerance, "num_tokens": num_tokens,
                           "num_requests": num_requests, "config": config_file, "small_model": small, "cpu": cpu,
                           "avx512_bf16": bf16, "amx_bf16": amx,
                           "chosen_hidden_size": best["hidden_size"], "rounds": rounds}
    (out / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    return spec


def off_target_warning(rounds: list[dict], chosen: dict, target: float, tolerance: float) -> str | None:
    """What to tell the user when the kept round's ratio missed ``target`` by more than
    ``tolerance`` (relative): the width to start from next time. ``None`` when on target."""
    if abs(chosen["ratio"] / target - 1.0) <= tolerance:
        return None
    suggestion = next_width(chosen["hidden_size"], chosen["ratio"], target)
    return (f"warning: {chosen['ratio']}x is outside {target:g}x +- {tolerance:.0%} after {len(rounds)} rounds "
            f"(the served small tier's timing is noisy): re-run with --start-width {suggestion}, "
            f"or with more --max-rounds / --requests")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Build the cost-scaled large model at the width whose per-token decode time is "
                    "~TARGET x the small model's on this machine (vLLM, as served).")
    p.add_argument("--src", default="demo-models/arith-large", help="source Hugging Face folder to pad")
    p.add_argument("--config", default="cluster/serve-scaled.yaml",
                   help="serve file whose tiers are timed (its large model is replaced by each candidate)")
    p.add_argument("--out", default="models/arith-large-scaled", help="output folder")
    p.add_argument("--target-ratio", type=float, default=TARGET_RATIO, help="large/small per-token time wanted")
    p.add_argument("--tolerance", type=float, default=0.1, help="accepted relative error of the ratio")
    p.add_argument("--max-rounds", type=int, default=4, help="pad-and-time rounds at most (each ~40 s)")
    p.add_argument("--num-tokens", type=int, default=128, help="decode steps per timing")
    p.add_argument("--start-width", type=int, default=SCALED_SPEC.hidden_size, help="first width tried")
    p.add_argument("--requests", type=int, default=3, help=f"large-tier requests per round, {SMALL_REQUESTS_FACTOR}x as many for the small tier "
                        "(the fastest counts)")
    args = p.parse_args(argv)
    if args.target_ratio <= 1.0 or not 0.0 < args.tolerance < 1.0 or args.max_rounds < 1 or args.num_tokens < 8 \
            or args.requests < 1:
        p.error("need --target-ratio > 1, 0 < --tolerance < 1, --max-rounds >= 1, --num-tokens >= 8, --requests >= 1")
    if args.start_width % WIDTH_STEP or not MIN_WIDTH <= args.start_width <= MAX_WIDTH:
        p.error(f"--start-width must be a multiple of {WIDTH_STEP} in [{MIN_WIDTH}, {MAX_WIDTH}]")
    if not (Path(args.src) / "config.json").is_file():
        p.error(f"{args.src} is not a Hugging Face model folder (no config.json)")
    if not Path(args.config).is_file():
        p.error(f"{args.config}: no such serve file")
    spec = calibrate(Path(args.src), args.config, Path(args.out), args.target_ratio, args.tolerance,
                     args.max_rounds, args.num_tokens, args.start_width, args.requests)
    chosen = next(r for r in spec["calibration"]["rounds"] if r["hidden_size"] == spec["pad"]["hidden_size"])
    print(f"{args.out}: width {chosen['hidden_size']}, {spec['num_parameters'] / 1e6:.0f} M parameters, "
          f"{chosen['ratio']}x the small model's per-token time")
    warning = off_target_warning(spec["calibration"]["rounds"], chosen, args.target_ratio, args.tolerance)
    if warning:
        print(warning)
    if not spec["calibration"]["amx_bf16"]:
        print("note: this CPU exposes no bf16 matrix unit (amx_bf16), so the padded model's prefill is slow "
              "(0.06-0.12 of a decode step per uncached token on the CPUs measured, against 0.013 on a "
              "core with AMX): handoffs into the large tier cost several decode steps and relay speedups "
              "here understate an accelerator's. Measure yours: python -m relay_ray.bench.engine_ttft "
              "(docs/benchmarks.md, \"Item 3: on a CPU without a matrix unit\")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
