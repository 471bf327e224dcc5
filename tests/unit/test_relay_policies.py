"""Policies driven through the real controller over scripted tiers."""

from __future__ import annotations

import asyncio

import pytest

from relay_ray.controller import RelayController, RelayResult, SegmentFinished, TextDelta
from relay_ray.types import FinishReason, PromptInput, RelayRequest, Tier
from tests.unit.fakes import EOS, ScriptedTier

VOCAB = ["</s>", "Q: ", "a", " b", " So", ",", " c", ".", " d", "<call>", "5", "</call>", "</think>", "\n",
         " now", " know", "0", "x", "y", "z", "<think>"]
W = {w: i for i, w in enumerate(VOCAB)}


def ids(*words: str) -> list[int]:
    return [W[w] for w in words]


def run(controller: RelayController, policy: str, params: dict | None = None, max_new_tokens: int = 64,
        prompt: str = "Q: ", stream: bool = False) -> tuple[RelayResult, list]:
    async def go():
        events = []
        async for ev in controller.generate(
            RelayRequest(PromptInput(text=prompt), policy, params or {}, max_new_tokens=max_new_tokens),
            stream_text=stream,
        ):
            events.append(ev)
        return events[-1], events
    return asyncio.run(go())


def pair(large_doc, small_doc=None, large_ent=(), small_ent=(), **kw) -> tuple[RelayController, ScriptedTier, ScriptedTier]:
    large = ScriptedTier(Tier.LARGE, VOCAB, large_doc, large_ent, **kw)
    small = ScriptedTier(Tier.SMALL, VOCAB, small_doc if small_doc is not None else large_doc, small_ent, **kw)
    return RelayController({Tier.LARGE: large, Tier.SMALL: small}), large, small


def tiers_of(result: RelayResult) -> list[Tier]:
    return [s.tier for s in result.segments]


DOC = ids("a", " b", " c", " d", "a", " So", ",", " c", " d", ".", " b", " b", " c", " So", " b", ".", " d") + [EOS]


@pytest.mark.parametrize("policy,params", [
    ("large-only", {}), ("small-only", {}), ("fixed-ratio", {"large_tokens": 3, "small_tokens": 2}),
    ("relaygen", {"cues": [" So"], "sentence_ends": ["."], "min_tokens_after_return": 0}),
    ("rstitch", {"tau": 0.5}), ("relayllm", {}),
])
def test_same_model_relay_reproduces_the_document(policy, params):
    entropies = [0.9 if i % 3 == 0 else 0.1 for i in range(len(DOC))]
    controller, _, _ = pair(DOC, large_ent=entropies, small_ent=entropies)
    result, _ = run(controller, policy, params)
    assert list(result.token_ids) == DOC
    assert result.stats.finish_reason is FinishReason.EOS


def test_fixed_ratio_alternates_at_its_lengths():
    controller, _, _ = pair(DOC)
    result, _ = run(controller, "fixed-ratio", {"large_tokens": 3, "small_tokens": 2, "first": "small"})
    lengths = [(s.tier, s.num_tokens) for s in result.segments]
    assert lengths[:4] == [(Tier.SMALL, 2), (Tier.LARGE, 3), (Tier.SMALL, 2), (Tier.LARGE, 3)]
    assert result.stats.num_switches == len(lengths) - 1


def test_relaygen_hands_the_sentence_after_a_cue_to_the_small_model():
    controller, large, small = pair(DOC)
    result, _ = run(controller, "relaygen", {"cues": [" So"], "sentence_ends": ["."], "min_tokens_after_return": 0})
    first, second, third = result.segments[:3]
    assert (first.tier, first.text, first.matched_stop) == (Tier.LARGE, "a b c da So", " So")
    assert (second.tier, second.text, second.matched_stop) == (Tier.SMALL, ", c d.", ".")
    assert third.tier is Tier.LARGE
    assert result.stats.tokens_by_tier[Tier.SMALL] == len(ids(",", " c", " d", ".")) + len(ids(" b", "."))


def test_relaygen_ignores_cues_in_the_first_tokens_after_a_return():
    doc = ids("a", " So", " b", " c", " d", " So", " b", ".") + [EOS]
    controller, _, _ = pair(doc)
    result, _ = run(controller, "relaygen", {"cues": [" So"], "sentence_ends": ["."], "min_tokens_after_return": 3})
    assert result.segments[0].text == "a So b c d So"  # the early " So" (token 2) does not count


def test_relaygen_cue_must_start_a_word():
    doc = ids("a", " know", " b", " now", " c", ".") + [EOS]
    controller, _, _ = pair(doc)
    result, _ = run(controller, "relaygen", {"cues": ["now"], "min_tokens_after_return": 0})
    assert result.segments[0].matched_stop == "now" and result.segments[0].text == "a know b now"


def test_relaygen_small_model_writes_the_answer_after_think():
    doc = ids("a", " b", "</think>", "\n", " c", " d", " So", " b") + [EOS]
    controller, _, _ = pair(doc)
    result, _ = run(controller, "relaygen", {"cues": [" So"], "min_tokens_after_return": 0})
    assert [(s.tier, s.text) for s in result.segments] == [(Tier.LARGE, "a b</think>"), (Tier.SMALL, "\n c d So b")]


def test_relaygen_answer_phase_offload_keeps_the_whole_trace_on_the_large_model():
    doc = ids("a", " So", ",", " c", ".", " b", "</think>", "\n", " c", " d") + [EOS]
    controller, _, _ = pair(doc)
    result, _ = run(controller, "relaygen", {"cues": [" So"], "min_tokens_after_return": 0,
                                             "offload_sentences": False})
    assert [(s.tier, s.text) for s in result.segments] == [(Tier.LARGE, "a So, c. b</think>"),
                                                           (Tier.SMALL, "\n c d")]


def test_relaygen_closes_an_open_think_block_when_the_budget_runs_out():
    doc = ids("a", " b", " c", " d") * 4  # the model never closes the block itself
    controller, _, _ = pair(doc, prompt="Q: <think>")
    result, events = run(controller, "relaygen", {"cues": [" So"]}, max_new_tokens=6, prompt="Q: <think>")
    assert result.text == "a b c da b" + "\n</think>"
    assert list(result.token_ids) == doc[:6] + ids("\n", "</think>")
    assert result.stats.finish_reason is FinishReason.BUDGET
    # Appended by the controller, not written by a tier: no segment carries it.
    assert "".join(s.text for s in result.segments) == "a b c da b"
    assert sum(isinstance(e, SegmentFinished) for e in events) == len(result.segments)


@pytest.mark.parametrize("case,prompt,doc,policy,params", [
    ("the prompt opened no <think>", "Q: ", ids("a", " b", " c", " d") * 4, "relaygen", {"cues": [" So"]}),
    ("the model closed it", "Q: <think>", ids("a", "</think>", " b", " c", " d") * 4, "relaygen",
     {"cues": [" So"], "small_writes_answer": False}),
    ("the policy does not close", "Q: <think>", ids("a", " b", " c", " d") * 4, "large-only", {}),
])
def test_no_think_close_is_appended_when_nothing_is_open(case, prompt, doc, policy, params):
    controller, _, _ = pair(doc, prompt=prompt)
    result, _ = run(controller, policy, params, max_new_tokens=6, prompt=prompt)
    assert result.stats.finish_reason is FinishReason.BUDGET, case
    assert list(result.token_ids) == doc[:6], case


def test_rstitch_drops_the_uncertain_small_token_and_the_large_model_writes_it():
    large_doc = ids("a", " b", " c", " d", "a", " b", " c", " d") + [EOS]
    small_doc = ids("a", " b", "x", "y", "z", "x", "y", "z") + [EOS]
    small_ent = [0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    large_ent = [0.5, 0.5, 0.6, 0.7, 0.2, 0.5, 0.5, 0.5, 0.5]
    controller, _, _ = pair(large_doc, small_doc, large_ent, small_ent)
    result, _ = run(controller, "rstitch", {"tau": 0.3})
    segs = result.segments
    assert (segs[0].tier, segs[0].text, segs[0].num_dropped_tokens, segs[0].finish_reason) == (
        Tier.SMALL, "a b", 1, FinishReason.ENTROPY)
    assert (segs[1].tier, segs[1].text, segs[1].finish_reason) == (Tier.LARGE, " c da", FinishReason.ENTROPY)
    # The small model takes over at output position 5 and writes the rest of its document.
    assert (segs[2].tier, segs[2].text, segs[2].finish_reason) == (Tier.SMALL, "xyz", FinishReason.EOS)
    assert result.text == "a b c daxyz"
    assert list(result.token_ids) == ids("a", " b", " c", " d", "a", "x", "y", "z") + [EOS]
    assert result.stats.generated_by_tier[Tier.SMALL] == result.stats.tokens_by_tier[Tier.SMALL] + 1


# The second case: the caller opens a command, writes text instead of a number, then a
# well-formed command before the stop: the large model continues from the text before the
# *first* <call> (the unfinished command and what follows it are dropped too).
@pytest.mark.parametrize("small_doc,num_dropped", [
    (ids("a", " b", "<call>", "5", "</call>", "y", "y", "y", "y", "y", "y", "z", "z") + [EOS], 3),
    (ids("a", " b", "<call>", "x", " c", "<call>", "5", "</call>", "y", "y", "z") + [EOS], 6),
])
def test_relayllm_removes_the_command_and_the_large_model_writes_n_tokens(small_doc, num_dropped):
    large_doc = ids("0", "0", " c", " d", "a", " b", " c", " d", "a", " b", " c", " d", "a") + [EOS]
    controller, _, _ = pair(large_doc, small_doc)
    result, _ = run(controller, "relayllm", {})
    segs = result.segments
    assert (segs[0].tier, segs[0].text, segs[0].num_dropped_tokens) == (Tier.SMALL, "a b", num_dropped)
    assert (segs[1].tier, segs[1].num_tokens, segs[1].text) == (Tier.LARGE, 5, " c da b c")
    assert segs[2].tier is Tier.SMALL and "<call>" not in result.text and "x" not in result.text
    assert result.stats.tokens_by_tier[Tier.LARGE] == 5


@pytest.mark.parametrize("params,num_large", [({"min_call_tokens": 8}, 8), ({"min_call_tokens": 3}, 5),
                                               ({"min_call_tokens": 8, "max_call_tokens": 8}, 8),
                                               ({"max_call_tokens": 2}, 2)])
def test_relayllm_call_length_floor_and_cap(params, num_large):
    small_doc = ids("a", " b", "<call>", "5", "</call>", "y", "y", "y", "y", "y", "y", "z", "z") + [EOS]
    large_doc = ids("0", "0", " c", " d", "a", " b", " c", " d", "a", " b", " c", " d", "a") + [EOS]
    controller, _, _ = pair(large_doc, small_doc)
    result, _ = run(controller, "relayllm", params)
    assert result.segments[1].tier is Tier.LARGE and result.stats.tokens_by_tier[Tier.LARGE] == num_large


def test_relayllm_floor_above_its_cap_is_refused():
    from relay_ray.policies.relayllm import RelayLLMParams

    with pytest.raises(ValueError, match="min_call_tokens"):
        RelayLLMParams(min_call_tokens=9, max_call_tokens=8)


@pytest.mark.parametrize("floor", [{}, {"min_call_tokens": 4}])  # a floor never turns n = 0 into a call
def test_relayllm_zero_and_call_limit_hand_nothing_over(floor):
    small_doc = ids("a", "<call>", "0", "</call>", " b", "<call>", "5", "</call>", " c") + [EOS]
    controller, _, _ = pair(small_doc, small_doc)
    result, _ = run(controller, "relayllm", {"max_calls": 1, **floor})
    # The first command (n=0) is removed and counted; greedy decoding re-emits it, and past
    # max_calls commands stay in the text: the loop is bounded, nothing reaches the large tier.
    assert result.stats.tokens_by_tier[Tier.LARGE] == 0
    assert result.segments[0].text == "a" and result.segments[0].num_dropped_tokens == 3
    assert result.text == "a<call>0</call> b<call>5</call> c"


def test_text_handoff_when_tokenizers_differ():
    large = ScriptedTier(Tier.LARGE, VOCAB, DOC, fingerprint="one")
    small = ScriptedTier(Tier.SMALL, VOCAB, DOC, fingerprint="two")
    result, _ = run(RelayController({Tier.LARGE: large, Tier.SMALL: small}), "fixed-ratio",
                    {"large_tokens": 3, "small_tokens": 2})
    assert result.stats.handoff_mode.value == "text"
    assert all(j.prefix_text is not None and not j.prefix_token_ids for j in large.jobs + small.jobs)
    assert result.text == "".join(VOCAB[t] for t in DOC if t != EOS)


def test_stream_emits_segments_then_the_result():
    controller, _, _ = pair(DOC)
    result, events = run(controller, "fixed-ratio", {"large_tokens": 4, "small_tokens": 4}, stream=True)
    finished = [e for e in events if isinstance(e, SegmentFinished)]
    assert "".join(e.record.text for e in finished) == result.text
    # The scripted tier streams nothing itself: the controller sends each committed segment.
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == result.text
    assert isinstance(events[-1], RelayResult)


def test_budget_ends_the_request():
    controller, _, _ = pair(DOC)
    result, _ = run(controller, "fixed-ratio", {"large_tokens": 3, "small_tokens": 2}, max_new_tokens=7)
    assert result.stats.finish_reason is FinishReason.BUDGET and len(result.token_ids) == 7
