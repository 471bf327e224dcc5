"""The synthetic arithmetic task: correct traces, hard-span labels, seeded disjoint splits."""

from __future__ import annotations

import json
import random
import re

import pytest

from relay_ray.tasks.arith import EASY_CUES, HARD_CUES, char_labels, generate, make_problem
from relay_ray.types import THINK_END
from relay_ray.tasks.splits import EVAL_SPLITS, eval_splits, train_problems, write_jsonl


def _problems(count=300, seed=5):
    return generate(seed, count, "t")


def test_traces_compute_the_answer_correctly():
    for p in _problems():
        a, b, n = p.operands
        assert p.answer == (a * n + b if p.kind == "mul_add" else (a + b) * n)
        assert p.completion.endswith(f"Answer: {p.answer}")
        trace, answer_part = p.completion.split(THINK_END)
        assert f"the answer is {p.answer}." in trace
        assert str(p.answer) in answer_part.splitlines()[2]  # the answer sentence restates it
        # every step line is arithmetic that holds
        for x, op, y, c, value in re.findall(r"(\d)([*+])(\d)\+(\d)=(\d+)", trace):
            got = int(x) * int(y) if op == "*" else int(x) + int(y)
            assert got + int(c) == int(value)


def test_running_results_make_restatements_copies():
    """"So the product is r." copies the last "so far r" (an easy span), digit for digit."""
    for p in _problems(100):
        so_far = re.findall(r"so far (\d+)\.", p.completion)
        restated = re.findall(r"^So the (?:sum|product) is (\d+)\.$", p.completion, flags=re.M)
        assert len(restated) == 2 and all(r in so_far for r in restated)


def test_hard_labels_cover_computed_values_only():
    p = make_problem(random.Random(3), "x", kind="mul_add")
    flags = char_labels(p.completion)
    hard = "".join(c if f else "|" for c, f in zip(p.completion, flags))
    values = re.findall(r"(?:\d[*+]\d\+\d|check \d\*\d)=(\d+)", p.completion)
    assert [s for s in hard.split("|") if s] == values
    # no hard character after </think>, and restatements are not hard
    end = p.completion.index(THINK_END)
    assert not any(flags[end:])
    so_line = re.search(r"^So .*$", p.completion, flags=re.M)
    assert not any(flags[so_line.start():so_line.end()])


def test_cues_open_the_intended_kinds_of_sentences():
    for p in _problems(100):
        for line in p.completion.split(THINK_END)[0].splitlines():
            has_hard = bool(re.search(r"(?:\d[*+]\d\+\d|check \d\*\d)=\d+", line))
            if line.startswith(HARD_CUES):
                assert has_hard, line
            if line.startswith(EASY_CUES):
                assert not has_hard, line


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="unknown problem kind 'div'"):
        make_problem(random.Random(0), "x", kind="div")


def test_generation_is_deterministic():
    assert [p.completion for p in _problems(20)] == [p.completion for p in _problems(20)]


def test_splits_have_their_sizes_and_share_no_problem():
    splits = eval_splits()
    assert {k: len(v) for k, v in splits.items()} == {k: n for k, (_, n) in EVAL_SPLITS.items()}
    assert len(splits["test"]) >= 500 and len(splits["calibration"]) == 40
    keys = {name: {(p.kind, *p.operands) for p in ps} for name, ps in splits.items()}
    train = {(p.kind, *p.operands) for p in train_problems(2000)}
    names = list(keys)
    for i, a in enumerate(names):
        assert not keys[a] & train
        for b in names[i + 1:]:
            assert not keys[a] & keys[b]


def test_jsonl_records(tmp_path):
    problems = _problems(3)
    write_jsonl(problems, tmp_path / "x.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert rows == [{"id": p.id, "prompt": p.prompt, "answer": str(p.answer)} for p in problems]


def test_committed_splits_match_the_generator():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "data" / "arith"
    for name, problems in eval_splits().items():
        rows = [json.loads(line) for line in (root / f"{name}.jsonl").read_text().splitlines()]
        assert rows == [p.record() for p in problems], f"data/arith/{name}.jsonl is stale"
