"""Micro-benchmark: what a handoff into a tier costs its engine alone, without Serve or the controller.

A handoff is a new vLLM request whose prompt is the relay's whole text so far. vLLM's prefix
cache gives back the whole KV blocks a previous request left, so the engine computes only the
*uncached* tokens (the other tier's tokens since the last segment, and the partial last block)
and then samples the first new token. This tool measures that time to first token (TTFT) as a
function of the uncached tokens, in the tier's own decode steps of the same run, by starting the
tier's engine in this process exactly as a replica does (same config, core binding and dtype):

    python -m relay_ray.bench.engine_ttft --config cluster/serve-scaled.yaml --tier large

Each measurement first runs the base prompt (filling the cache with its whole blocks), then the
base prompt plus ``uncached`` new tokens, so the engine computes exactly ``uncached`` tokens; the
table also reports what the engine itself counted (prompt length minus its ``num_cached_tokens``).
(A prompt that ends exactly on a block boundary is a trap: vLLM caps a cache hit at the prompt
length minus one, so it recomputes the whole last block. An earlier version of this tool asked
for ``uncached - 1`` new tokens, so its "1 uncached token" rows computed 32.) Combinations run in
a shuffled order so a drift of the machine's speed spreads over all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

from relay_ray.bench.console import table


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m relay_ray.bench.engine_ttft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cluster/serve-scaled.yaml", help="a serve file (relay-ray serve's format)")
    p.add_argument("--tier", choices=("large", "small"), default="large")
    p.add_argument("--contexts", type=int, nargs="+", default=[128, 192],
                   help="cached prompt lengths in tokens (multiples of the block size)")
    p.add_argument("--uncached", type=int, nargs="+", default=[1, 4, 8, 16, 24, 32, 48])
    p.add_argument("--repeats", type=int, default=8, help="measurements per combination")
    p.add_argument("--logprobs", type=int, default=None,
                   help="top logprobs per token, as entropy rules ask for (rstitch's large segments: 20)")
    p.add_argument("--idle-ms", type=float, nargs="+", default=[0.0],
                   help="pauses between the base prompt and the measured request (a relay's large tier "
                        "waits while the small tier writes; rstitch's small segments take ~100 ms)")
    p.add_argument("--seed", type=int, default=0)
    return p


async def _run(engine, ids: list[int], max_tokens: int, request_id: str,
               logprobs: int | None = None, flat_logprobs: bool = False,
               extra_args: dict | None = None) -> tuple[float, list[float], int]:
    """(TTFT ms, gaps between later tokens in ms, prompt tokens the engine computed) of one
    greedy request (``extra_args``: for the engine's logits processors)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, logprobs=logprobs,
                            output_kind=RequestOutputKind.DELTA, detokenize=False, flat_logprobs=flat_logprobs,
                            extra_args=extra_args)
    t0 = time.perf_counter()
    times = []
    num_cached_tokens = 0
    async for out in engine.generate(TokensPrompt(prompt_token_ids=ids), params, request_id):
        times.append(time.perf_counter())
        num_cached_tokens = out.num_cached_tokens or num_cached_tokens
    computed = len(ids) - num_cached_tokens
    return (times[0] - t0) * 1000.0, [(b - a) * 1000.0 for a, b in zip(times, times[1:])], computed


async def measure(args: argparse.Namespace) -> str:
    from relay_ray.serve.local import load_serve_file
    from relay_ray.engines.vllm_tier import VllmTierEngine
    from relay_ray.types import Tier

    relay = load_serve_file(Path(args.config)).relay
    config = getattr(relay, args.tier)
    if any(c % config.block_size for c in args.contexts):
        raise SystemExit(f"--contexts must be multiples of the {args.tier} tier's block size ({config.block_size})")
    tier = VllmTierEngine(Tier(args.tier), config)
    await tier.start()
    rng = random.Random(args.seed)
    vocab = tier.engine.model_config.get_vocab_size()

    def tokens(n: int) -> list[int]:
        return [rng.randrange(3, vocab) for _ in range(n)]

    try:
        gaps: list[float] = []
        for i in range(3):
            gaps += (await _run(tier.engine, tokens(64), 65, f"decode-{i}", args.logprobs))[1]
        step_ms = statistics.median(gaps)
        combos = [(c, u, i) for c in args.contexts for u in args.uncached for i in args.idle_ms] * args.repeats
        rng.shuffle(combos)
        ttfts: dict[tuple[int, int, float], list[float]] = {}
        computed: dict[tuple[int, int, float], list[int]] = {}
        for n, key in enumerate(combos, 1):
            context, uncached, idle_ms = key
            base = tokens(context)
            await _run(tier.engine, base, 1, f"warm-{n}")
            await asyncio.sleep(idle_ms / 1000.0)
            ttft, _, n_computed = await _run(tier.engine, base + tokens(uncached), 2, f"ttft-{n}", args.logprobs)
            ttfts.setdefault(key, []).append(ttft)
            computed.setdefault(key, []).append(n_computed)
            print(f"\r{n}/{len(combos)} measured", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        tier.shutdown()
    rows = []
    for key, v in sorted(ttfts.items()):
        context, uncached, idle_ms = key
        p50 = statistics.median(v)
        rows.append([str(context), str(uncached), f"{idle_ms:g}", str(statistics.median(computed[key])), f"{p50:.1f}",
                     f"{p50 / step_ms:.2f}", f"{min(v):.1f}", f"{max(v):.1f}"])
    head = (f"{args.tier} tier of {args.config}: decode step p50 {step_ms:.1f} ms ({len(gaps)} steps); "
            f"{args.repeats} measurements per row; logprobs {args.logprobs}\n")
    return head + table(("cached context", "uncached tokens", "idle before, ms", "computed (engine's count)",
                         "TTFT p50 ms", "in decode steps", "min ms", "max ms"), rows)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if any(u < 1 for u in args.uncached) or args.repeats < 1 or any(not 0 <= i <= 60_000 for i in args.idle_ms):
        print("--uncached values and --repeats must be at least 1, --idle-ms values within 0-60000", file=sys.stderr)
        return 2
    print(asyncio.run(measure(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
