"""Step-load shape for the relay's Locust user (``relay-ray plan`` runs it).

    locust -f loadtest/stepload.py --headless --host 127.0.0.1:9000 --steps 1:40,2:40,4:40 \
        --policy-mix large-only:1 --max-new-tokens 64 --ignore-eos --requests-csv out/large.csv

``--steps users:seconds,...``: hold each user count for its duration, then the next; the run
ends after the last step. All other options are the locustfile's.
"""

from __future__ import annotations

from locust import LoadTestShape, events

from locustfile import RelayUser  # noqa: F401  (the user class this shape drives)


def parse_steps(text: str) -> list[tuple[int, float]]:
    """``"1:40,2:40"`` -> [(1, 40.0), (2, 40.0)]."""
    steps = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        users, _, seconds = part.partition(":")
        steps.append((int(users), float(seconds)))
    if not steps or any(u < 1 or s <= 0 for u, s in steps):
        raise ValueError(f"bad --steps {text!r}: use users:seconds,users:seconds")
    return steps


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--steps", default="1:30", env_var="RELAY_STEPS", help="users:seconds,... step load")


class StepLoad(LoadTestShape):
    """Holds each step's user count (all users start at once) for the step's duration."""

    def tick(self):
        steps = parse_steps(self.runner.environment.parsed_options.steps)
        elapsed = self.get_run_time()
        for users, seconds in steps:
            if elapsed < seconds:
                return users, max(users, 1)
            elapsed -= seconds
        return None
