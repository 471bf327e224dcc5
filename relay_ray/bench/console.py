"""Console output shared by ``relay-ray bench``, ``eval``, ``calibrate`` and the quality matrix:
markdown / aligned-text tables and progress bars (tqdm, on stderr); and the process priority
the measuring harnesses give Ray's workers.
"""

from __future__ import annotations

import os
import sys

# Ray starts its worker processes (Serve replicas, and so the vLLM engines they spawn) at
# niceness 15 unless told otherwise: on a shared machine any normal-priority process (a test
# run next door) then takes the CPU first and per-token times double. Measurements run them at
# normal priority.
WORKER_NICENESS_ENV = "RAY_worker_niceness"


def measure_at_normal_priority() -> None:
    """Before Ray starts: its workers keep niceness 0 (unless the variable is already set)."""
    os.environ.setdefault(WORKER_NICENESS_ENV, "0")
from collections.abc import Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = True,
          right: Sequence[int] = ()) -> str:
    """``rows`` under ``header``, columns padded to a common width.

    ``markdown``: a GitHub table (``| a | b |``); otherwise plain columns separated by two
    spaces with a dashed rule under the header. Columns listed in ``right`` are right-aligned.
    An empty ``rows`` gives the header alone.
    """
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def cells(values: Sequence[str]) -> list[str]:
        return [v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))]

    if markdown:
        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join(["| " + " | ".join(cells(header)) + " |", rule]
                         + ["| " + " | ".join(cells(r)) + " |" for r in rows])
    lines = ["  ".join(cells(header)).rstrip(), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + ["  ".join(cells(r)).rstrip() for r in rows])


def progress(label: str, total: int, stream=None):
    """A tqdm progress bar on stderr; ``update(1)`` per item, ``set_postfix_str`` for figures,
    ``close()`` at the end. Off a terminal it prints a line at most every 30 s."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    tty = stream.isatty()
    return tqdm(total=total, desc=label, file=stream, leave=True, dynamic_ncols=tty, ncols=None if tty else 100,
                mininterval=0.2 if tty else 30.0, maxinterval=30.0 if not tty else 10.0)
