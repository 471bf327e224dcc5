"""Calibration rules (pure): RelayGen cue selection and the R-Stitch threshold choice.

RelayGen cues. For every occurrence of a candidate cue in the large model's reasoning traces
(matched like the policy's stop rule: a cue that starts with a letter or digit must start a
word), the *region* is the text after the cue up to and including the first sentence end
(``.`` ``!`` ``?`` ``\\n\\n``) or ``</think>``: exactly what the small model would write if the
cue handed over. For the small model's next-token distributions over the region's tokens
(teacher-forced on the large model's text) we take the top1 - top2 probability margin.

- ``mean margin``: mean over occurrences of the region's mean margin (RelayGen's statistic);
- ``min margin``: mean over occurrences of the region's *lowest* margin.

Rule: a cue is selected when it occurs at least ``min_count`` times and its mean lowest
margin is at least ``min_margin``: the small model must be sure of every token of the
sentences the cue hands over, not just of most of them (one unsure digit in a sentence of
copies barely moves the mean but is where the small model goes wrong).

R-Stitch threshold. Among the taus whose accuracy is at least ``target`` x the large-only
accuracy, recommend the one with the lowest large-model token share (the larger tau on a tie).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay_ray.types import THINK_END


@dataclass(frozen=True)
class TokenMargins:
    """A large-model completion and, per token, its character span and the small model's margin."""

    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    margins: tuple[float, ...]


@dataclass(frozen=True)
class CueStats:
    cue: str
    count: int
    mean_margin: float
    mean_min_margin: float
    selected: bool
    reason: str


def cue_positions(text: str, cue: str, limit: int) -> list[int]:
    """Start offsets of ``cue`` in ``text[:limit]``, honouring the word-start rule."""
    out, pos = [], text.find(cue)
    while 0 <= pos and pos + len(cue) <= limit:
        if not cue[:1].isalnum() or pos == 0 or not text[pos - 1].isalnum():
            out.append(pos)
        pos = text.find(cue, pos + 1)
    return out


def region_end(text: str, start: int, sentence_ends: Sequence[str], limit: int) -> int:
    """End (exclusive) of the region starting at ``start``: the first sentence end, included."""
    best = limit
    for end in sentence_ends:
        i = text.find(end, start, limit)
        if 0 <= i and i + len(end) < best:
            best = i + len(end)
    return best


def region_margins(trace: TokenMargins, start: int, end: int) -> list[float]:
    """Margins of the tokens that overlap ``[start, end)``."""
    return [m for s, e, m in zip(trace.starts, trace.ends, trace.margins) if e > start and s < end]


def cue_table(traces: Sequence[TokenMargins], candidates: Sequence[str], sentence_ends: Sequence[str],
              min_count: int = 3, min_margin: float = 0.95) -> list[CueStats]:
    """One row per candidate, selected ones first, each group by descending mean lowest margin."""
    rows = []
    for cue in dict.fromkeys(candidates):
        means, mins = [], []
        for t in traces:
            limit = t.text.find(THINK_END)
            limit = len(t.text) if limit < 0 else limit
            for pos in cue_positions(t.text, cue, limit):
                start = pos + len(cue)
                margins = region_margins(t, start, region_end(t.text, start, sentence_ends, limit))
                if margins:
                    means.append(sum(margins) / len(margins))
                    mins.append(min(margins))
        count = len(mins)
        mean_margin = sum(means) / count if count else 0.0
        mean_min = sum(mins) / count if count else 0.0
        if count < min_count:
            selected, reason = False, f"{count} occurrence(s) < {min_count}"
        elif mean_min < min_margin:
            selected, reason = False, f"min margin {mean_min:.2f} < {min_margin}"
        else:
            selected, reason = True, "small model sure of the sentences it would write"
        rows.append(CueStats(cue, count, mean_margin, mean_min, selected, reason))
    return sorted(rows, key=lambda r: (not r.selected, -r.mean_min_margin, -r.count))


@dataclass(frozen=True)
class TauPoint:
    tau: float
    accuracy: float
    large_share: float


def recommend_tau(points: Sequence[TauPoint], large_accuracy: float, target: float = 0.97) -> TauPoint | None:
    """The lowest-share tau keeping ``accuracy >= target * large_accuracy`` (None if none does)."""
    ok = [p for p in points if p.accuracy >= target * large_accuracy - 1e-12]
    if not ok:
        return None
    return min(ok, key=lambda p: (p.large_share, -p.tau))
