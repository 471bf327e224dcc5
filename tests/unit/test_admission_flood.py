"""loadtest/admission_flood.py's summary line and its loopback-only rule (no server needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "admission_flood", Path(__file__).resolve().parents[2] / "loadtest" / "admission_flood.py")
flood = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(flood)


def test_the_summary_counts_refusals_by_the_gate_and_other_statuses():
    outcomes = [(429, 0.003, True), (429, 0.010, False), (429, 0.004, True), (200, 1.2, False),
                (200, 0.8, False), (503, 0.1, False)]
    line = flood.summary("HTTP round 1", outcomes, 200, 429)
    assert line.startswith("HTTP round 1: refused 3 (2 by the gate, slowest 4 ms; by Serve slowest 10 ms), p50 4 ms")
    assert "p95 9 ms, max 10 ms" in line  # the p95 never above the maximum
    assert "served 2, p50 1000 ms" in line and "other statuses: 503" in line
    assert "refused 0; served 0" in flood.summary("gRPC", [], "OK", "RESOURCE_EXHAUSTED")
    only_serve = flood.summary("gRPC", [("RESOURCE_EXHAUSTED", 0.02, False)], "OK", "RESOURCE_EXHAUSTED")
    assert "(0 by the gate, slowest - ms; by Serve slowest 20 ms)" in only_serve


def test_the_loop_lag_summary():
    assert flood.lag_summary([0.0, 0.001, 0.002, 0.050]) == "flood loop lag p50 2 ms, p95 43 ms, max 50 ms"
    assert flood.lag_summary([]) == "flood loop lag: n/a"


def test_a_flood_goes_to_loopback_only(capsys):
    with pytest.raises(SystemExit):
        flood.main(["--http-url", "http://10.0.0.7:8000"])
    assert "loopback" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        flood.main(["--rounds", "0"])
    with pytest.raises(SystemExit):
        flood.main(["--probe-interval-ms", "5"])
    assert "--probe-interval-ms" in capsys.readouterr().err
    for bad in (["--flood-niceness", "20"], ["--retry-jitter", "1"], ["--http-client", "curl"], ["--apis", "websocket"]):
        with pytest.raises(SystemExit):
            flood.main(bad)
        assert bad[0] in capsys.readouterr().err
