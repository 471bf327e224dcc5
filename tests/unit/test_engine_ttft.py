"""The engine micro-benchmarks (TTFT, decode step) refuse arguments they cannot measure, before starting an engine."""

from __future__ import annotations

import pytest

from relay_ray.bench import engine_ttft


def test_zero_uncached_tokens_is_refused(capsys):
    assert engine_ttft.main(["--uncached", "0", "8"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_negative_idle_is_refused(capsys):
    assert engine_ttft.main(["--idle-ms", "0", "-5"]) == 2
    assert "--idle-ms values within 0-60000" in capsys.readouterr().err


def test_contexts_off_the_block_size_are_refused():
    with pytest.raises(SystemExit, match=r"multiples of the large tier's block size \(32\)"):
        engine_ttft.main(["--config", "cluster/serve-scaled.yaml", "--contexts", "100"])


def test_engine_decode_refuses_what_it_cannot_measure(capsys):
    from relay_ray.bench import engine_decode

    assert engine_decode.main(["--new-tokens", "1"]) == 2
    assert "--new-tokens at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        engine_decode.main(["--logprobs", "-1"])
    assert "'none', 'engine', K or K:flat" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        engine_decode.main(["--logprobs", "20:fast"])
