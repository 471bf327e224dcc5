"""Caller training data mirrors serving: the call replaces the spot, the span carries no loss."""

from __future__ import annotations

import pytest

from relay_ray.models.caller import caller_examples
from relay_ray.models.sequences import IGNORE, make_example
from relay_ray.models.train import CHAT_WORDS
from relay_ray.models.vocab import build_task_tokenizer
from relay_ray.tasks.arith import generate


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    problems = generate(0, 300, "t")
    texts = [t for p in problems for t in (p.prompt, p.completion)] + [CHAT_WORDS] * 20
    return build_task_tokenizer(tmp_path_factory.mktemp("tok"), texts, 448)


def test_digits_are_single_tokens_and_markup_survives(tokenizer):
    ids = tokenizer.encode(" 1234<call>2</call></think>", add_special_tokens=False)
    pieces = [tokenizer.decode([i]) for i in ids]
    assert pieces == [" 1", "2", "3", "4", "<call>", "2", "</call>", "</think>"]


def test_example_labels_cover_the_completion_and_eos(tokenizer):
    p = generate(1, 1, "x")[0]
    e = make_example(tokenizer, p.prompt, p.completion)
    targets = [x for x in e.labels if x != IGNORE]
    assert targets[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(targets[:-1]) == p.completion
    assert tokenizer.decode(e.input_ids[:e.num_prompt_tokens]).endswith("<think>\n")


def test_clean_and_command_sequences(tokenizer):
    p = generate(2, 1, "x")[0]
    e = make_example(tokenizer, p.prompt, p.completion)
    pos = e.num_prompt_tokens + 20  # pretend the large model must write tokens pos, pos+1
    call_open, call_close = tokenizer.convert_tokens_to_ids(["<call>", "</call>"])
    data = caller_examples(tokenizer, [e], [[(pos, 2)]], commands_per_example=1)
    clean = next(x for x in data if len(x.input_ids) == len(e.input_ids))
    command = next(x for x in data if x is not clean)
    assert clean.input_ids == e.input_ids
    assert clean.labels[pos - 1] == call_open  # call instead of writing the span
    assert clean.labels[pos] == IGNORE  # the span's second token: the large model writes it
    assert clean.labels[pos + 1] == e.labels[pos + 1]  # after the span: back to the gold text
    assert command.input_ids[:pos] == e.input_ids[:pos]
    assert tokenizer.decode(command.input_ids[pos:]) == "<call>2</call>"
    assert [x for x in command.labels if x != IGNORE] == [call_open, *tokenizer.encode("2"), call_close]
