"""Stop rules evaluated on a token stream, as the tier does."""

from __future__ import annotations

from relay_ray.engines.stopping import SegmentStopper
from relay_ray.types import Commit, EntropyRule, FinishReason, StopRule


def feed(rule: StopRule, pieces, entropies=None, context: str = "", eos=()):
    stopper = SegmentStopper(rule, context, eos)
    for i, piece in enumerate(pieces):
        decision = stopper.push(i + 10, piece, entropies[i] if entropies else None)
        if decision is not None:
            return decision, stopper
    return None, stopper


def test_stop_string_inclusive_keeps_the_match():
    d, s = feed(StopRule(max_new_tokens=10, stop_strings=("So",)), ["a", " b", " S", "o", " c"])
    assert (d.finish_reason, d.num_kept_tokens, d.matched_stop) == (FinishReason.STOP_STRING, 4, "So")
    assert s.kept_text(d.num_kept_tokens) == "a b So"


def test_stop_string_exclusive_drops_the_tokens_overlapping_it():
    rule = StopRule(max_new_tokens=10, stop_strings=("<call>",), string_commit=Commit.EXCLUSIVE)
    d, s = feed(rule, ["a", " b<", "call", ">", "5"])
    assert d.num_kept_tokens == 1 and s.kept_text(1) == "a"


def test_min_new_tokens_defers_every_rule_but_eos():
    rule = StopRule(max_new_tokens=10, min_new_tokens=3, stop_strings=("x",))
    d, _ = feed(rule, ["x", "y", "z", "x"])
    assert d.num_kept_tokens == 4
    d, _ = feed(rule, ["x", ""], eos=(11,))
    assert (d.finish_reason, d.num_kept_tokens) == (FinishReason.EOS, 2)


def test_word_start_uses_the_context_for_the_first_token():
    rule = StopRule(max_new_tokens=10, stop_strings=("now",), word_start=True)
    assert feed(rule, ["now", "."], context="k")[0] is None
    assert feed(rule, ["now"], context=" ")[0].matched_stop == "now"
    assert feed(rule, [" know", " now"])[0].num_kept_tokens == 2


def test_entropy_above_exclusive_and_below_inclusive():
    above = StopRule(max_new_tokens=10, entropy=EntropyRule(0.5, above=True, commit=Commit.EXCLUSIVE))
    d, _ = feed(above, ["a", "b", "c"], [0.1, 0.7, 0.1])
    assert (d.finish_reason, d.num_kept_tokens) == (FinishReason.ENTROPY, 1)
    below = StopRule(max_new_tokens=10, entropy=EntropyRule(0.5, above=False))
    d, _ = feed(below, ["a", "b", "c"], [0.9, 0.7, 0.1])
    assert (d.finish_reason, d.num_kept_tokens) == (FinishReason.ENTROPY, 3)


def test_stop_token_and_length():
    d, _ = feed(StopRule(max_new_tokens=10, stop_token_ids=(12,)), ["a", "b", "c", "d"])
    assert (d.finish_reason, d.num_kept_tokens) == (FinishReason.STOP_TOKEN, 3)
    d, _ = feed(StopRule(max_new_tokens=2), ["a", "b", "c"])
    assert (d.finish_reason, d.num_kept_tokens) == (FinishReason.LENGTH, 2)


def test_a_match_before_min_tokens_is_not_reported_later():
    rule = StopRule(max_new_tokens=10, min_new_tokens=2, stop_strings=("So",))
    assert feed(rule, ["So", " a", " b"])[0] is None
