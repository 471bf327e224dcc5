"""Calibration rules: cue regions and selection, tau recommendation."""

from __future__ import annotations

import pytest

from relay_ray.quality.calibrate import (
    TauPoint, TokenMargins, cue_positions, cue_table, recommend_tau, region_end, region_margins,
)

ENDS = (".", "!", "?", "\n\n")


def trace(text: str, unsure: str = "#") -> TokenMargins:
    """One token per character; margin 0.1 on ``unsure`` characters, 0.99 elsewhere."""
    n = len(text)
    return TokenMargins(text, tuple(range(n)), tuple(range(1, n + 1)),
                        tuple(0.1 if c == unsure else 0.99 for c in text))


def test_cue_positions_follow_the_word_start_rule_and_stop_at_think_end():
    text = "So it is. Also so. So, now. know</think>So"
    assert cue_positions(text, "So", text.index("</think>")) == [0, 19]
    assert cue_positions(text, "now", len(text)) == [23]
    assert cue_positions(text, ",", len(text)) == [21]


def test_region_runs_to_the_first_sentence_end_included():
    text = "So 12+3=15, next. More"
    assert region_end(text, 2, ENDS, len(text)) == text.index(".") + 1
    assert region_end("So no end", 2, ENDS, 9) == 9
    t = trace("So ab. cd")
    assert region_margins(t, 2, 6) == [0.99] * 4


def test_cues_leading_into_unsure_sentences_are_rejected():
    traces = [trace("Now compute 7*3+0=#1, carry 2, so far 1. So 7*3=21.\nTherefore, x is 21.\nNext, 4+#=9.\n</think>So #")
              for _ in range(3)]
    rows = {r.cue: r for r in cue_table(traces, ["So", "Therefore,", "Now compute", "Next,", "Hence"], ENDS)}
    assert rows["So"].selected and rows["Therefore,"].selected
    assert not rows["Now compute"].selected and "min margin" in rows["Now compute"].reason
    assert not rows["Next,"].selected
    assert rows["So"].count == 3  # the "So" after </think> is not a reasoning cue
    assert not rows["Hence"].selected and rows["Hence"].count == 0
    # one unsure token in a long sentence barely moves the mean margin, but sets the minimum
    assert rows["Now compute"].mean_margin > 0.93 and rows["Now compute"].mean_min_margin == pytest.approx(0.1)
    ordered = [r.cue for r in cue_table(traces, ["Next,", "So", "Therefore,"], ENDS)]
    assert ordered[-1] == "Next,"


def test_rare_cues_are_not_judged():
    rows = cue_table([trace("So a.")], ["So"], ENDS, min_count=3)
    assert not rows[0].selected and "1 occurrence" in rows[0].reason


def test_recommended_tau_is_the_cheapest_that_keeps_accuracy():
    points = [TauPoint(0.01, 0.95, 0.40), TauPoint(0.05, 0.94, 0.25), TauPoint(0.1, 0.90, 0.15)]
    assert recommend_tau(points, large_accuracy=0.96, target=0.97).tau == 0.05
    assert recommend_tau(points, large_accuracy=1.0, target=0.99) is None
    tie = [TauPoint(0.05, 1.0, 0.2), TauPoint(0.1, 1.0, 0.2)]
    assert recommend_tau(tie, 1.0).tau == 0.1
