"""The task's splits: fixed seeds, disjoint problems, JSONL files for evaluation.

``python -m relay_ray.tasks.splits --out data/arith`` writes ``calibration.jsonl`` (40),
``dev.jsonl`` (500) and ``test.jsonl`` (500), one ``{"id", "prompt", "answer"}`` per line.
The training split is drawn on demand (:func:`train_problems`) and never shares an operand
triple with the evaluation splits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from relay_ray.tasks.arith import Problem, generate

# name -> (seed, number of problems); drawn in this order, each excluding the ones before.
EVAL_SPLITS: dict[str, tuple[int, int]] = {"calibration": (11, 40), "dev": (12, 500), "test": (13, 500)}
TRAIN_SEED = 14


def eval_splits() -> dict[str, list[Problem]]:
    """The evaluation splits, identical on every call."""
    seen: set[tuple] = set()
    return {name: generate(seed, count, name, seen) for name, (seed, count) in EVAL_SPLITS.items()}


def train_problems(count: int, seed: int = TRAIN_SEED) -> list[Problem]:
    """``count`` training problems, none of which is in an evaluation split."""
    seen: set[tuple] = set()
    for name, (split_seed, split_count) in EVAL_SPLITS.items():
        generate(split_seed, split_count, name, seen)
    return generate(seed, count, "train", seen)


def write_jsonl(problems: list[Problem], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for p in problems:
            f.write(json.dumps(p.record()) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/arith", help="folder for the JSONL files")
    args = parser.parse_args(argv)
    for name, problems in eval_splits().items():
        path = Path(args.out) / f"{name}.jsonl"
        write_jsonl(problems, path)
        print(f"{path}: {len(problems)} problems")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
