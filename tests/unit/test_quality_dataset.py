"""Evaluation inputs: bad dataset lines are reported one by one, answers are extracted and compared."""

from __future__ import annotations

import json

import pytest

from relay_ray.errors import RelayInputError
from relay_ray.quality.dataset import load_dataset
from relay_ray.quality.extract import extract, parse_format, same_answer
from relay_ray.quality.runs import load_cue_file, parse_run, parse_runs

BAD_LINES = [
    '{"id": "a", "prompt": "What is 2+2?", "answer": "4"}',
    '{"id": "b", "prompt": "no answer"}',
    'this is not json',
    '',
    '["a", "list"]',
    '{"id": "c", "prompt": "", "answer": "1"}',
    '{"id": "a", "prompt": "dup", "answer": "1"}',
    '{"id": 7, "prompt": "numbers are fine", "answer": 12}',
    '{"id": "d", "prompt": "p", "answer": "1", "answer_format": "roman"}',
    '{"id": "e", "prompt": "p", "answer": "1", "answer_format": "boxed"}',
    '{"prompt": "p"}',
    '{"id": "f", "prompt": "p", "answer": true}',
]


def test_bad_lines_are_reported_line_by_line_and_valid_lines_kept(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(BAD_LINES) + "\n")
    items, errors = load_dataset(path)
    assert [i.id for i in items] == ["a", "7", "e"]
    assert items[1].answer == "12" and items[2].answer_format == parse_format("boxed")
    by_line = {e.line: e.message for e in errors}
    assert set(by_line) == {2, 3, 5, 6, 7, 9, 11, 12}
    assert "missing field 'answer'" in by_line[2]
    assert "not valid JSON" in by_line[3]
    assert "JSON object" in by_line[5]
    assert "'prompt' must be a non-empty string" in by_line[6]
    assert "duplicate id 'a' (first on line 1)" in by_line[7]
    assert "unknown answer format 'roman'" in by_line[9] and "answer-line" in by_line[9]
    assert "missing fields 'id', 'answer'" in by_line[11]
    assert "'answer' must be" in by_line[12]
    assert str(errors[0]).startswith("line 2: ")


def test_limit_and_missing_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "prompt": "p", "answer": i}) for i in range(5)))
    assert len(load_dataset(path, limit=2)[0]) == 2
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_dataset(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("fmt,text,want", [
    ("answer-line", "x\nAnswer: 12\nAnswer: 466", "466"),
    ("answer-line", "Answer: 1,234.", "1,234"),
    ("answer-line", "no answer here", None),
    ("boxed", "so \\boxed{3} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("boxed", "\\boxed{unclosed", None),
    ("regex:result=(\\d+)", "result=3 result=44", "44"),
    ("regex:\\d+", "a 1 b 22", "22"),
])
def test_extraction(fmt, text, want):
    assert extract(text, parse_format(fmt)) == want


@pytest.mark.parametrize("spec,msg", [("roman", "unknown answer format 'roman'"), ("regex:", "needs a pattern"),
                                      ("regex:(", "invalid regular expression")])
def test_bad_formats_are_named(spec, msg):
    with pytest.raises(ValueError, match=msg.replace("(", "\\(")):
        parse_format(spec)


def test_answers_compare_numerically_when_they_can():
    assert same_answer("1,234", "1234") and same_answer("466.0", "466")
    assert not same_answer("465", "466") and not same_answer(None, "1")
    assert same_answer(" x+1 ", "x+1")


def test_run_specs(tmp_path):
    run = parse_run("fast=rstitch:tau=0.1")
    assert (run.label, run.policy, run.params) == ("fast", "rstitch", {"tau": 0.1})
    assert parse_run("relaygen:cues=[\"So\", \"Thus,\"],min_tokens_after_return=3").params == {
        "cues": ["So", "Thus,"], "min_tokens_after_return": 3}
    cue_file = tmp_path / "cues.json"
    cue_file.write_text(json.dumps({"cues": ["So", "Therefore,"]}))
    assert parse_run(f"relaygen:cues_file={cue_file}").params == {"cues": ["So", "Therefore,"]}
    runs = parse_runs(["rstitch:tau=0.1", "r=random:match=rstitch:tau=0.1"])
    assert runs[1].match == "rstitch:tau=0.1" and runs[1].policy == "random"


@pytest.mark.parametrize("specs,field_part", [
    (["nosuch"], "unknown policy 'nosuch'"), (["rstitch:tau=7"], "policy.tau"),
    (["rstitch:tau"], "expected KEY=VALUE"), (["random:match=x"], "must name a run listed before it"),
    (["rstitch:match=x"], "random policy only"), (["a=large-only", "a=small-only"], "used twice"),
    (["relaygen:cues_file=/nonexistent.json"], "cue file not found"),
])
def test_bad_run_specs_are_named(specs, field_part):
    with pytest.raises(RelayInputError, match=field_part.replace("(", "\\(")):
        parse_runs(specs)


def test_cue_file_must_hold_cues(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"cues": []}')
    with pytest.raises(RelayInputError, match="non-empty list"):
        load_cue_file(bad)
