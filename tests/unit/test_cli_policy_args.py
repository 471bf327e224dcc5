"""Policy flags take one value or several according to the parameter's declared type."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest
from pydantic import BaseModel

from relay_ray.cli import policy_flags


class _Params(BaseModel):
    words: tuple[str, ...] = ()
    maybe_words: tuple[str, ...] | None = None
    counts: list[int] = []
    mode: Literal["tuple", "list"] = "tuple"  # a scalar whose type *name* mentions tuple
    tau: float | None = None  # an optional scalar


class _FakePolicy:
    Params = _Params


def _parser(monkeypatch) -> argparse.ArgumentParser:
    monkeypatch.setattr(policy_flags, "REGISTRY", {"fake": _FakePolicy})
    parser = argparse.ArgumentParser()
    policy_flags.add_policy_args(parser)
    return parser


def test_sequence_parameters_take_several_values(monkeypatch):
    args = _parser(monkeypatch).parse_args(
        ["--words", "a", "b", "--maybe-words", "c", "d", "--counts", "1", "2", "--mode", "list", "--tau", "0.5"])
    assert args.param_words == ["a", "b"] and args.param_maybe_words == ["c", "d"]
    assert args.param_counts == ["1", "2"]
    assert args.param_mode == "list" and args.param_tau == "0.5"


@pytest.mark.parametrize("flag", ["--mode", "--tau"])
def test_scalar_parameters_take_exactly_one_value(monkeypatch, flag):
    with pytest.raises(SystemExit):
        _parser(monkeypatch).parse_args([flag, "x", "y"])


def test_real_registry_cues_are_a_list_and_tau_a_scalar():
    parser = argparse.ArgumentParser()
    policy_flags.add_policy_args(parser)
    args = parser.parse_args(["--policy", "relaygen", "--cues", " So", " Therefore", "--tau", "0.3"])
    assert args.param_cues == [" So", " Therefore"] and args.param_tau == "0.3"
