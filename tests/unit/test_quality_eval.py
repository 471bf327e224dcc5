"""`relay-ray eval` end to end against a fake RelayService client (no Ray, no models)."""

from __future__ import annotations

import json

import pytest

import relay_ray.client
from relay_ray.cli import main
from relay_ray.v1 import relay_pb2 as rpb

ITEMS = [{"id": f"q{i}", "prompt": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(6)]


def _segments(policy: str) -> list:
    """large-only: one 10-token large segment after a 20-token prompt; small-only: one small
    segment; relays: small 4, large 3 (its 24-token prefix uncached), small 3."""
    seg = rpb.SegmentInfo
    if policy == "large-only":
        return [seg(tier=1, num_tokens=10, num_prompt_tokens=20)]
    if policy == "small-only":
        return [seg(tier=2, num_tokens=10, num_prompt_tokens=20)]
    return [seg(tier=2, num_tokens=4, num_prompt_tokens=20), seg(index=1, tier=1, num_tokens=3, num_prompt_tokens=24),
            seg(index=2, tier=2, num_tokens=3, num_prompt_tokens=27, num_cached_tokens=24)]


class FakeClient:
    """large-only: always right, 100 ms; small-only: wrong on odd items, 10 ms; others: right, 40 ms."""

    requests: list = []

    def __init__(self, address, app=None, timeout_s=None):
        self.address = address

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def generate(self, request):
        FakeClient.requests.append(request)
        i = int(request.request_id.rsplit("/q", 1)[1])
        policy = request.policy.name
        answer = 2 * i + (1 if policy == "small-only" and i % 2 else 0)
        large = {"large-only": 10, "small-only": 0}.get(policy, 3)
        latency = {"large-only": 100.0, "small-only": 10.0}.get(policy, 40.0)
        return rpb.GenerateResponse(
            text=f"<think>\n{i}+{i}\n</think>\n\nAnswer: {answer}", segments=_segments(policy),
            stats=rpb.RelayStats(large_tokens=large, small_tokens=10 - large, num_switches=2 if 0 < large < 10 else 0,
                                 latency_ms=latency, finish_reason=1, large_token_share=large / 10),
        )


@pytest.fixture
def fake_client(monkeypatch):
    FakeClient.requests = []
    monkeypatch.setattr(relay_ray.client, "RelayClient", FakeClient)
    return FakeClient


def _dataset(tmp_path, extra_lines=()):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join([json.dumps(x) for x in ITEMS] + list(extra_lines)) + "\n")
    return path


def test_eval_prints_the_table_and_writes_json_and_markdown(tmp_path, fake_client, capsys):
    data = _dataset(tmp_path)
    rc = main(["eval", str(data), "--policies", "large-only", "small-only", "rstitch:tau=0.2",
               "rnd=random:match=rstitch:tau=0.2", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "large-only" in out and "100.0%" in out and "50.0%" in out and "2.50x" in out
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    s = {x["label"]: x for x in result["summaries"]}
    assert s["small-only"]["accuracy"] == 0.5 and s["large-only"]["speedup"] == 1.0
    assert s["rstitch:tau=0.2"]["large_share"] == pytest.approx(0.3)
    assert s["rstitch:tau=0.2"]["switches_per_request"] == 2
    assert s["small-only"]["agreement_with_large"] == 0.5
    # intervals and paired tests: small-only is wrong on 3 of 6 where large-only is right
    assert (s["small-only"]["only_run_right"], s["small-only"]["only_large_right"]) == (0, 3)
    assert s["small-only"]["mcnemar_p"] == pytest.approx(0.25)
    assert s["small-only"]["accuracy_low"] == pytest.approx(0.1876, abs=1e-4)
    # compute: the relay's large segment prefills its 24-token prefix and decodes 2 of 3 tokens
    assert s["rstitch:tau=0.2"]["large_compute_share"] == pytest.approx((24 + 2) / (20 + 9))
    # the structure-matched random run: rstitch's share and mean large segment (3 tokens / 1 segment)
    assert s["rnd"]["params"] == {"large_share": 0.3, "mean_large_tokens": 3.0}
    sent = [r for r in fake_client.requests if r.policy.name == "random"]
    assert len(sent) == 6 and all(r.sampling.temperature == 0 for r in sent)
    assert all(r.policy.random.mean_large_tokens == 3.0 for r in sent)
    md = (tmp_path / "out" / "results.md").read_text()
    assert md.startswith("| policy ") and "| 95% CI " in md and "| compute share |" in md
    assert md.count("\n") == 6 and "89.7%" in md


def test_eval_reports_bad_lines_and_runs_the_valid_ones(tmp_path, fake_client, capsys):
    data = _dataset(tmp_path, ['{"id": "x"}', "garbage", '{"id": "q0", "prompt": "dup", "answer": "0"}'])
    rc = main(["eval", str(data), "--policies", "large-only"])
    captured = capsys.readouterr()
    assert rc == 0
    assert f"{data}: line 7: missing fields 'prompt', 'answer'" in captured.err
    assert f"{data}: line 8: not valid JSON" in captured.err
    assert "line 9: duplicate id 'q0'" in captured.err
    assert "3 bad line(s) skipped; 6 valid item(s) will run" in captured.err
    assert len(fake_client.requests) == 6 and "100.0%" in captured.out


@pytest.mark.parametrize("argv,msg", [
    (["--answer-format", "roman"], "unknown answer format 'roman'"),
    (["--policies", "nosuch"], "unknown policy 'nosuch'"),
    (["--concurrency", "0"], "--concurrency"),
])
def test_eval_rejects_bad_options_before_sending(tmp_path, fake_client, capsys, argv, msg):
    assert main(["eval", str(_dataset(tmp_path)), *argv]) == 2
    assert msg in capsys.readouterr().err and not fake_client.requests


def test_eval_with_no_valid_line_or_no_file(tmp_path, fake_client, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n")
    assert main(["eval", str(bad)]) == 2
    assert "no valid items" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_calibrate_rstitch_prints_the_frontier_and_writes_the_choice(tmp_path, fake_client, capsys):
    out = tmp_path / "cal.json"
    rc = main(["calibrate", "rstitch", "--data", str(_dataset(tmp_path)), "--taus", "0.1", "0.2",
               "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    report = json.loads(out.read_text())
    # both taus are as accurate as large-only here (100%) at a 30% share: the larger tau wins the tie
    assert report["recommended_tau"] == 0.2 and [p["tau"] for p in report["sweep"]] == [0.1, 0.2]
    lines = {line.split()[0]: line.split() for line in printed.splitlines() if line[:3] in ("0.1", "0.2")}
    assert lines["0.2"][1:4] == ["100.0%", "100.0%", "30.0%"] and lines["0.2"][-1] == "recommended"
    assert printed.count("<- recommended") == 1
