"""``relay-ray``: serve the relay, talk to it, run a standalone tier.

- ``parser``: the argument parser, one helper per subcommand;
- ``policy_flags``: the policy flags (``--tau``, ``--cues``, ``--large-tokens`` ...), derived from
  the policies' typed parameter models, so they never drift from what the server accepts;
- ``commands``: serve, generate, gateway, tier-server (and the eval/calibrate entries);
- ``demo``: the demo, and the OpenAI URL and curl line that reach a served relay;
- ``output``: a response printed for a terminal.
"""

from __future__ import annotations

import sys

from relay_ray.cli.parser import build_parser
from relay_ray.errors import RelayInputError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RelayInputError as exc:
        print(f"relay-ray: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # gRPC errors etc.: one clear line, not a traceback
        import grpc

        if isinstance(exc, grpc.RpcError):
            print(f"relay-ray: server answered {exc.code().name}: {exc.details()}", file=sys.stderr)
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                print("  is the relay running? start it with `relay-ray serve`", file=sys.stderr)
            return 1
        raise
