"""Micro-benchmark: a tier's decode step in its engine alone, with and without logprobs.

Entropy rules (rstitch) need the top-k logprobs of every token, so their segments decode with
``SamplingParams.logprobs`` set, unless the tier evaluates the rule in the engine's sampler
(setting ``engine``: engines/entropy_stop.py, here with a threshold that never fires);
fixed-length and cue-stopped segments decode without. This tool starts the tier's engine in this process exactly as a
replica does (same config, core binding and dtype) and measures the gaps between streamed
tokens for each logprobs setting, the settings interleaved in a shuffled order so that a drift
of the machine's speed spreads over all of them:

    python -m relay_ray.bench.engine_decode --config cluster/serve-scaled.yaml --tier small --logprobs none 20 engine
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
from pathlib import Path

from relay_ray.bench.console import table
from relay_ray.bench.engine_ttft import _run


def _setting(text: str) -> str:
    """'none', 'engine' (the in-engine rule), 'K' (top-K logprobs) or 'K:flat' (the same in vLLM's
    flat containers)."""
    k, _, flat = text.partition(":")
    if text not in ("none", "engine") and (not k.isdigit() or flat not in ("", "flat")):
        raise argparse.ArgumentTypeError("logprobs settings are 'none', 'engine', K or K:flat (K an integer >= 0)")
    return text


def _params(setting: str, tier) -> tuple[int | None, bool, dict | None]:
    """(logprobs, flat containers, extra_args) of a setting on ``tier`` (a started VllmTierEngine)."""
    if setting == "engine":
        from relay_ray.engines.entropy_stop import stop_args

        if tier._sentinel is None:
            raise SystemExit("the tier runs no in-engine rule (entropy_in_engine off, speculative, or no sentinel)")
        info = tier.describe()
        return None, False, stop_args(2.0, 0, tier._sentinel, tier.config.max_logprobs, info.vocab_size, (), True)
    k, _, flat = setting.partition(":")
    return (None, False, None) if setting == "none" else (int(k), flat == "flat", None)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m relay_ray.bench.engine_decode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cluster/serve-scaled.yaml", help="a serve file (relay-ray serve's format)")
    p.add_argument("--tier", choices=("large", "small"), default="small")
    p.add_argument("--logprobs", type=_setting, nargs="+", default=["none", "0", "20"],
                   help="settings to compare: 'none' (no logprobs), 'engine' (no logprobs; the in-engine entropy rule, "
                        "never firing), K (top-K; 0 = the sampled token's only) or K:flat (vLLM's flat logprobs containers)")
    p.add_argument("--prompt-tokens", type=int, default=100)
    p.add_argument("--new-tokens", type=int, default=150, help="tokens per request")
    p.add_argument("--repeats", type=int, default=6, help="requests per setting")
    p.add_argument("--seed", type=int, default=0)
    return p


async def measure(args: argparse.Namespace) -> str:
    from relay_ray.engines.vllm_tier import VllmTierEngine
    from relay_ray.serve.local import load_serve_file
    from relay_ray.types import Tier

    config = getattr(load_serve_file(Path(args.config)).relay, args.tier)
    tier = VllmTierEngine(Tier(args.tier), config)
    await tier.start()
    rng = random.Random(args.seed)
    vocab = tier.engine.model_config.get_vocab_size()
    order = list(args.logprobs) * args.repeats
    rng.shuffle(order)
    gaps: dict[str, list[float]] = {}
    try:
        await _run(tier.engine, [rng.randrange(3, vocab) for _ in range(args.prompt_tokens)], 16, "warm")
        for n, setting in enumerate(order, 1):
            prompt = [rng.randrange(3, vocab) for _ in range(args.prompt_tokens)]
            gaps.setdefault(setting, []).extend((await _run(tier.engine, prompt, args.new_tokens, f"d{n}", *_params(setting, tier)))[1])
            print(f"\r{n}/{len(order)} requests", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        tier.shutdown()
    base = statistics.median(gaps[args.logprobs[0]])
    rows = [[s, f"{statistics.median(g):.3f}", f"{statistics.mean(g):.3f}",
             f"{statistics.median(g) / base:.2f}x", str(len(g))] for s, g in ((s, gaps[s]) for s in args.logprobs)]
    head = (f"{args.tier} tier of {args.config}: {args.repeats} requests of {args.new_tokens} tokens per setting, "
            f"interleaved; ratio against the first setting ({args.logprobs[0]})\n")
    return head + table(("logprobs", "decode gap p50 ms", "mean ms", "vs first", "gaps"), rows)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.logprobs = list(dict.fromkeys(args.logprobs))
    if args.prompt_tokens < 1 or args.new_tokens < 2 or args.repeats < 1:
        print("--prompt-tokens and --repeats must be at least 1, --new-tokens at least 2", file=sys.stderr)
        return 2
    print(asyncio.run(measure(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
