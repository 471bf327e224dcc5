"""How many large-model forward passes speculative decoding needs inside a run's large segments.

    python -m relay_ray.quality.spec_steps out/matrix-spec-why "large-only" "relaygen + spec"

For every answer of a row's latency pass (its traces are kept), the draft model's greedy
choice at each token says whether a greedy draft would have matched
(:meth:`relay_ray.quality.margins.MarginScorer.draft_matches`). Each large segment is a new
request: its first token comes from the prefill's forward pass, the rest from verification
steps of ``k`` drafts (:func:`relay_ray.quality.compute.speculative_large_positions`). The
table gives, per row: large segments, large tokens, forward passes, tokens per forward pass,
and the draft's match rate inside the large segments and over the whole answer. It says
whether a relay's large segments are harder to draft than the whole answer, and what splitting
the answer into segments costs speculative decoding.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from relay_ray.quality.compute import speculative_large_positions


def large_forward_passes(matches: Sequence[bool], segments: Sequence[tuple[bool, int]], k: int) -> tuple[int, int, list[bool]]:
    """(large tokens, large forward passes, matches inside large segments) of one answer whose
    token ``j`` the draft predicts right iff ``matches[j]``; ``segments`` are (large?, tokens)
    in order and cover the answer."""
    if sum(n for _, n in segments) != len(matches):
        raise ValueError(f"segments cover {sum(n for _, n in segments)} tokens, the answer has {len(matches)}")
    tokens = passes = pos = 0
    inside: list[bool] = []
    for large, n in segments:
        if large and n:
            seg = list(matches[pos:pos + n])
            inside += seg
            tokens += n
            passes += 1 + speculative_large_positions(seg, k) // (k + 1)  # the prefill's token, then steps
        pos += n
    return tokens, passes, inside


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m relay_ray.quality.spec_steps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="a matrix run's folder (results.json)")
    p.add_argument("labels", nargs="+", help="rows whose latency passes to count")
    p.add_argument("--k", type=int, default=4, help="drafted tokens per verification step")
    p.add_argument("--draft", default="demo-models/arith-small", help="the draft model")
    args = p.parse_args(argv)
    from relay_ray.bench.console import table
    from relay_ray.quality.dataset import load_dataset
    from relay_ray.quality.margins import MarginScorer
    from relay_ray.quality.matrix_run import MatrixResults

    results = MatrixResults.load(Path(args.out) / "results.json")
    missing = [label for label in args.labels if label not in results.entries or results.entries[label].latency is None]
    if missing or args.k < 1:
        print(f"no latency pass for {missing} in {args.out}" if missing else "--k must be >= 1", file=sys.stderr)
        return 2
    prompts = {i.id: i.prompt for i in load_dataset(results.meta["data"])[0]}
    scorer = MarginScorer(args.draft)
    rows = []
    for label in args.labels:
        segs = tokens = passes = 0
        inside: list[bool] = []
        every: list[bool] = []
        for r in results.entries[label].latency.results:
            if r.error or not r.token_ids:
                continue
            matches = scorer.draft_matches(prompts[r.id], r.text, r.token_ids)
            t, n, m = large_forward_passes(matches, [(s.large, s.num_tokens) for s in r.segments], args.k)
            segs, tokens, passes = segs + sum(1 for s in r.segments if s.large and s.num_tokens), tokens + t, passes + n
            inside += m
            every += matches
        rows.append([label, str(segs), str(tokens), str(passes), f"{tokens / max(passes, 1):.2f}",
                     f"{sum(inside) / max(len(inside), 1):.3f}", f"{sum(every) / max(len(every), 1):.3f}"])
    print(table(("row", "large segments", "large tokens", "large forward passes", "tokens per pass",
                 "draft match, large segments", "draft match, whole answers"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
