"""The CLI's flags come from the policy registry; bad flags give one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from relay_ray.cli import build_parser, main


def test_help_lists_commands_and_policy_flags():
    help_text = build_parser().format_help()
    for command in ("serve", "demo", "generate", "tier-server", "bench"):
        assert command in help_text
    gen = subprocess.run([sys.executable, "-m", "relay_ray.cli", "generate", "--help"], capture_output=True, text=True)
    assert gen.returncode == 0 and "--tau" in gen.stdout and "--cues" in gen.stdout


def test_flag_of_another_policy_is_rejected(capsys):
    assert main(["generate", "hi", "--policy", "relaygen", "--tau", "0.2"]) == 2
    assert "--tau" in capsys.readouterr().err


def test_out_of_range_parameter_is_rejected_before_sending(capsys):
    assert main(["generate", "hi", "--policy", "rstitch", "--tau", "3"]) == 2
    assert "policy.tau" in capsys.readouterr().err


def test_unreachable_server_says_what_to_do(capsys):
    rc = main(["generate", "hi", "--address", "127.0.0.1:1", "--timeout-s", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and "relay-ray serve" in err


@pytest.mark.parametrize("argv", [["demo", "--config", "/nonexistent.yaml"], ["serve", "--config", "/nonexistent.yaml"]])
def test_missing_config_file_is_named(argv, capsys):
    assert main(argv) == 2
    assert "/nonexistent.yaml" in capsys.readouterr().err
