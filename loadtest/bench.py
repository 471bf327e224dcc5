"""The issue-4 performance matrix as a script (same as `relay-ray bench`).

    .venv/bin/python loadtest/bench.py --json out/bench.json --markdown out/bench.md
    .venv/bin/python loadtest/bench.py --pair bench=cluster/serve-bench.yaml --concurrency 1 --scenarios 25%

Run from the repository root after `make setup bench-models`. `--help` lists every option.
"""

from __future__ import annotations

import argparse
import sys

from relay_ray.bench import command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest/bench.py")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
