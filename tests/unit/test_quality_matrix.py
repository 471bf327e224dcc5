"""The issue-10 matrix without Ray or models: plans, the dev-stage decision rules, a whole run
against a fake relay (matching, resume, tables), and the Pareto plot."""

from __future__ import annotations

import json

import grpc
import pytest

import relay_ray.client
import relay_ray.serve.local
from relay_ray.quality import matrix_run
from relay_ray.quality.matrix import (
    ABLATION, CALLER, KV, LARGE_X2, SCALED, SPEC, Decisions, Entry, Group, check_plan, cue_sets, dev_plan, final_plan,
)
from relay_ray.quality.matrix_report import decide, main_table, rows, sweep_table, tier_costs
from relay_ray.controller.limits import REQUEST_ID_PATTERN
from relay_ray.v1 import common_pb2 as cpb
from relay_ray.v1 import relay_pb2 as rpb

DECISIONS = Decisions(split="dev", rstitch_tau=0.12, relaygen_cue_set="calibrated", rules={})
N = 40


def test_final_plan_runs_every_row_of_the_issue_once():
    plan = final_plan(DECISIONS)
    check_plan(plan)
    labels = [e.label for e in plan]
    for label in ("large-only", "small-only", "rstitch", "random@rstitch", "relaygen", "random@relaygen",
                  "relayllm", "random@relayllm", "spec decoding", "relaygen + spec", "rstitch + spec",
                  "rstitch + KV sessions", "relaygen + KV sessions", "large-only x2", "spec decoding x2"):
        assert label in labels
    by = {e.label: e for e in plan}
    assert by["rstitch"].params == {"tau": 0.12} and by["relaygen"].cue_set == "calibrated"
    assert by["relayllm"].deployment == CALLER and by["random@relayllm"].match == "relayllm"
    assert by["spec decoding"].deployment == SPEC and by["large-only x2"].deployment == LARGE_X2
    assert by["rstitch + KV sessions"].deployment == KV and by["rstitch + KV sessions"].params == {"tau": 0.12}
    assert not by["large-only x2"].latency and by["large-only"].latency
    # the chosen tau / cue set are not run twice on the curves; curve points run on 200 items
    assert [e.tau for e in plan if e.group is Group.TAU_SWEEP and e.tau == 0.12] == []
    assert {e.items for e in plan if e.group in (Group.TAU_SWEEP, Group.CUE_SETS)} == {200}
    assert by["relaygen"].items is None and by["large-only"].items is None
    # deployments are contiguous, so each is started once
    order = [e.deployment for e in plan]
    assert order == sorted(order, key=order.index)


def test_cue_sets_run_from_answer_only_to_every_task_cue():
    sets = cue_sets()
    assert sets["answer only"] == {"offload_sentences": False}
    assert set(sets["discourse cues"]["cues"]) < set(sets["calibrated"]["cues"]) < set(sets["all task cues"]["cues"])
    assert {"Next,", "Now compute", "Wait, check"} <= set(sets["all task cues"]["cues"])


@pytest.mark.parametrize("entries,msg", [
    ([Entry(label="a", policy="large-only"), Entry(label="a", policy="small-only")], "used twice"),
    ([Entry(label="r", policy="random", match="x")], "earlier run"),
    ([Entry(label="x", policy="rstitch"), Entry(label="r", policy="random", match="x", deployment=CALLER)],
     "earlier run"),
])
def test_bad_plans_are_refused(entries, msg):
    with pytest.raises(ValueError, match=msg):
        check_plan(entries)


class Refused(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.INVALID_ARGUMENT

    def details(self):
        return "request_id: at most 128 characters of letters, digits and ._:/@+=-"


class FakeRelay:
    """Items are right unless listed in WRONG[policy, tau]; large share and segments by policy;
    each call advances ``clock`` (the runner's perf_counter here) by the policy's latency."""

    requests: list = []
    resets: list = []  # (len(requests), application) at each prefix-cache reset
    apps: list = []  # the application each request went to (None: the only one)
    clock = [0.0]
    refuse = False  # refuse every request but the warm-ups (the controller refuses bad request ids)
    # item index -> wrong, per (policy, tau): tau 0.3 is cheap and wrong often, 0.02 expensive and right
    WRONG = {("large-only", None): {1, 2, 3}, ("small-only", None): set(range(0, N, 2)),
             ("rstitch", 0.02): {1, 2, 3}, ("rstitch", 0.05): {1, 2}, ("rstitch", 0.08): {1, 2, 3},
             ("rstitch", 0.12): {2, 3, 5},
             ("rstitch", 0.2): {2, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21}, ("rstitch", 0.3): set(range(0, N, 3)),
             # relayllm by call floor: floors 4 and 8 are as right as large-only
             ("relayllm", 1): {1, 2, 3, 5, 7, 9}, ("relayllm", 2): {1, 2, 3, 5}, ("relayllm", 4): {1, 2, 3},
             ("relayllm", 8): {1, 2, 3}}

    def __init__(self, address, app_name=None, timeout_s=None):
        self.app_name = app_name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def wait_ready(self):
        pass

    def generate(self, request):
        FakeRelay.requests.append(request)
        FakeRelay.apps.append(self.app_name)
        if not REQUEST_ID_PATTERN.match(request.request_id) or (FakeRelay.refuse and "/" in request.request_id):
            raise Refused()
        policy = request.policy.name
        if "/" not in request.request_id:  # warm-up
            return rpb.GenerateResponse(text="")
        i = int(request.request_id.rsplit("/q", 1)[1])
        tau = round(request.policy.rstitch.tau, 3) if policy == "rstitch" else (
            request.policy.relayllm.min_call_tokens or 1) if policy == "relayllm" else None
        wrong = i in self.WRONG.get((policy, tau), set())
        # large tokens fall as tau rises: 10 at 0.02 ... 7 at 0.12 ... 2 at 0.3
        large = {"large-only": 100, "small-only": 0}.get(policy, 2 + round(30 * (0.3 - (tau or 0.1))))
        seg = rpb.SegmentInfo
        if large in (0, 100):
            segs = [seg(tier=1 if large else 2, num_tokens=100, num_prompt_tokens=50,
                        timing=cpb.SegmentTiming(decode_ms=99 * (20.0 if large else 1.0)))]
        else:
            segs = [seg(tier=2, num_tokens=50, num_prompt_tokens=50),
                    seg(index=1, tier=1, num_tokens=large, num_prompt_tokens=100, handoff_ms=2.0,
                        timing=cpb.SegmentTiming(prefill_ms=30.0, engine_step_ms=20.0)),
                    seg(index=2, tier=2, num_tokens=50 - large, num_prompt_tokens=100 + large)]
        ms = {"large-only": 2100.0, "small-only": 150.0}.get(policy, 300.0)
        self.clock[0] += ms / 1000.0
        return rpb.GenerateResponse(text=f"Answer: {i + 1 if wrong else i}", segments=segs, stats=rpb.RelayStats(
            large_tokens=large, small_tokens=100 - large, num_switches=len(segs) - 1, latency_ms=ms))


@pytest.fixture
def fake_serve(monkeypatch):
    FakeRelay.requests, FakeRelay.resets, FakeRelay.apps, FakeRelay.refuse = [], [], [], False
    monkeypatch.setattr("relay_ray.quality.runner.time.perf_counter", lambda: FakeRelay.clock[0])
    monkeypatch.setenv("RAY_worker_niceness", "0")  # run_plan sets it for Ray; keep this process's env
    monkeypatch.setattr(relay_ray.client, "RelayClient", FakeRelay)
    monkeypatch.setattr(relay_ray.serve.local, "start_serve", lambda *a, **k: None)
    monkeypatch.setattr(relay_ray.serve.local, "stop_local", lambda: None)
    deployed = []
    monkeypatch.setattr(matrix_run, "_deploy", lambda name, root, app="relay": deployed.append((name, app)))
    monkeypatch.setattr(matrix_run, "_reset_prefix_caches",
                        lambda app="relay": FakeRelay.resets.append((len(FakeRelay.requests), app)) or True)
    return deployed


def _items():
    from relay_ray.quality.dataset import Item

    return [Item(f"q{i}", f"problem {i}", str(i), i + 1) for i in range(N)]


def _run(tmp_path, entries, resume=False, co_deploy=False):
    from relay_ray.quality.extract import parse_format

    return matrix_run.run_plan(entries, _items(), tmp_path, latency_items=5, fmt=parse_format("answer-line"),
                               resume=resume, meta={"data": "x"}, co_deploy=co_deploy)


def test_dev_stage_decides_by_the_rules(tmp_path, fake_serve):
    entries = dev_plan()
    assert {e.policy for e in entries} == {"large-only", "rstitch", "relayllm"} and not any(e.latency for e in entries)
    results = _run(tmp_path, entries)
    assert fake_serve == [(SCALED, "relay"), (CALLER, "relay")] and all(r.latency is None for r in results.entries.values())
    decisions = decide(results, "dev")
    # large-only 37/40; tau 0.12 (37/40) is the cheapest within a point and not significantly
    # below; 0.2 (29/40) is significantly below, 0.3 below by far
    assert decisions.rstitch_tau == 0.12
    assert decisions.relaygen_cue_set == "calibrated"
    assert decisions.evidence["runs"]["rstitch tau=0.2"]["mcnemar_p"] < 0.05
    # relayllm: floors 1 (34/40) and 2 (36/40) are more than a point below; 4 and 8 tie on
    # compute (the fake's large tokens do not depend on the floor): the smaller floor
    assert decisions.relayllm_min_call_tokens == 4
    plan = {e.label: e for e in final_plan(decisions)}
    assert plan["relayllm"].params == {"max_calls": 32, "min_call_tokens": 4}
    assert plan["relayllm, prefill-ahead off"].params == plan["relayllm"].params
    assert final_plan(DECISIONS)[0].label == "large-only" and "min_call_tokens" not in {
        k for e in final_plan(DECISIONS) for k in e.params}


def test_a_dev_run_of_one_group_keeps_the_other_groups_decision(tmp_path, fake_serve):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    taus = decide(_run(tmp_path / "a", dev_plan(floors=())), "dev")
    assert taus.relayllm_min_call_tokens == 1  # no floor was run: the caller's own spans
    floors = _run(tmp_path / "b", [e for e in dev_plan(floors=(1, 2)) if e.tau is None])
    both = decide(floors, "dev", previous=taus)
    assert (both.rstitch_tau, both.relayllm_min_call_tokens) == (0.12, 2)  # none meets the rule: the most accurate
    assert {"rstitch tau=0.2", "relayllm floor=1", "relayllm floor=2"} <= set(both.evidence["runs"])
    with pytest.raises(ValueError, match="no rstitch tau runs"):
        decide(floors, "dev")


def test_a_pass_whose_every_request_fails_stops_the_run_unsaved(tmp_path, fake_serve):
    _run(tmp_path, [Entry(label="large-only", policy="large-only")])
    FakeRelay.refuse = True
    with pytest.raises(RuntimeError, match=r"small-only: all 40 requests failed.*--resume"):
        _run(tmp_path, [Entry(label="small-only", policy="small-only")], resume=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["entries"]) == {"large-only"}  # a run with --resume does the failed pass again


def test_a_run_matches_resumes_and_tabulates(tmp_path, fake_serve):
    entries = [Entry(label="large-only", policy="large-only"), Entry(label="small-only", policy="small-only"),
               Entry(label="rstitch", policy="rstitch", params={"tau": 0.12}, tau=0.12),
               Entry(label="random@rstitch", policy="random", match="rstitch"),
               Entry(label="large-only x2", policy="large-only", deployment=LARGE_X2, group=Group.PEER,
                     latency=False)]
    _run(tmp_path, entries[:3])
    sent = len(FakeRelay.requests)
    results = _run(tmp_path, entries, resume=True)  # only the new entries run
    assert len(FakeRelay.requests) - sent == N + 5 + N + 2 * 2  # random full + latency, x2 full, 2 warm-ups
    random = results.entries["random@rstitch"].full.params
    assert random == {"large_share": 0.07, "mean_large_tokens": 7.0}  # rstitch: 7 of 100 tokens in 1 segment
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["entries"]) == {e.label for e in entries}
    costs = tier_costs(results)[SCALED]
    assert costs[0].ms_per_token == 20.0 and costs[1].ms_per_token == 1.0
    all_rows = rows(results)
    by = {r.entry.label: r for r in all_rows}
    assert by["rstitch"].into_large_p50_ms == 32.0 and by["rstitch"].into_large_p50_steps == pytest.approx(1.6)
    # compute: the large segment prefills 100 uncached tokens and decodes 6 of 7; large-only 50 + 99
    assert by["rstitch"].full.large_compute_share == pytest.approx(106 / 149)
    table = main_table(all_rows)
    assert "random@rstitch" in table and "large-only x2" in table and "71.1%" in table
    assert "tau=0.12" in sweep_table(all_rows)


def test_latency_passes_of_a_deployment_are_interleaved_on_empty_caches(tmp_path, fake_serve):
    from relay_ray.quality.matrix_run import turn_order

    entries = [Entry(label="large-only", policy="large-only"), Entry(label="small-only", policy="small-only"),
               Entry(label="rstitch", policy="rstitch", params={"tau": 0.12}, tau=0.12),
               Entry(label="caller alone", policy="small-only", deployment=CALLER)]
    results = _run(tmp_path, entries)
    ids = [r.request_id for r in FakeRelay.requests]
    scaled = [k for k, i in enumerate(ids) if "/" in i and not i.startswith("caller")]
    full, latency = scaled[:3 * N], scaled[3 * N:]
    # every full pass of the deployment first, then its latency passes item by item
    assert sorted(ids[k].split("/")[0] for k in full) == sorted(["large-only", "small-only", "rstitch"] * N)
    assert [ids[k] for k in latency] == [f"{label}/q{i}" for i in range(5)
                                         for label in turn_order(["large-only", "small-only", "rstitch"], i)]
    assert [ids[k].split("/")[0] for k in latency[:3]] == ["large-only", "small-only", "rstitch"]
    caller = [k for k, i in enumerate(ids) if i.startswith("caller_alone/")]
    assert min(caller) > max(latency) and len(caller) == N + 5
    # a reset right before every latency request, and only then
    assert FakeRelay.resets == [(k, "relay") for k in latency + caller[N:]]
    assert [r.id for r in results.entries["rstitch"].latency.results] == [f"q{i}" for i in range(5)]


def test_co_deployed_arms_run_their_latency_passes_interleaved_after_every_full_pass(tmp_path, fake_serve,
                                                                                      monkeypatch):
    from relay_ray.quality import matrix_run

    settles = []
    monkeypatch.setattr(matrix_run, "_settle", lambda s: settles.append((len(FakeRelay.requests), s)))
    entries = [Entry(label="large-only", policy="large-only"), Entry(label="small-only", policy="small-only"),
               Entry(label="rstitch", policy="rstitch", params={"tau": 0.12}, tau=0.12),
               Entry(label="rstitch, arm", policy="rstitch", params={"tau": 0.12}, tau=0.12, deployment=ABLATION,
                     full=False)]
    results = _run(tmp_path, entries, co_deploy=True)
    # each deployment under an application of its own, none replaced
    assert fake_serve == [(SCALED, "relay0"), (ABLATION, "relay1")]
    ids = [r.request_id for r in FakeRelay.requests]
    measured = [k for k, i in enumerate(ids) if "/" in i]
    full, latency = measured[:3 * N], measured[3 * N:]
    assert {ids[k].split("/")[0] for k in full} == {"large-only", "small-only", "rstitch"}
    # after the last full pass, every row item by item, each on its own application's engines;
    # rows take turns at every position (rotated, reversed in the second round)
    rows = [("large-only", "relay0"), ("small-only", "relay0"), ("rstitch", "relay0"), ("rstitch__arm", "relay1")]
    turns = [rows, rows[1:] + rows[:1], rows[2:] + rows[:2], rows[3:] + rows[:3], rows[::-1]]
    assert [(ids[k], FakeRelay.apps[k]) for k in latency] == [
        (f"{label}/q{i}", app) for i in range(5) for label, app in turns[i]]
    assert FakeRelay.resets == [(k, FakeRelay.apps[k]) for k in latency]
    # a request on another application than the one before waits for that one's engines to go quiet
    switches = [k for k, prev in zip(latency[1:], latency) if FakeRelay.apps[k] != FakeRelay.apps[prev]]
    assert settles == [(k, matrix_run.SETTLE_S) for k in switches] and len(switches) == 10
    assert [r.id for r in results.entries["rstitch, arm"].latency.results] == [f"q{i}" for i in range(5)]


def test_kv_session_rows_show_no_large_compute(tmp_path, fake_serve):
    # A KV-session tier computes the feeds' tokens, which no response reports: its compute
    # share would be an undercount (the first plot put relaygen + KV sessions at 5.3x).
    from relay_ray.quality.matrix_report import large_compute

    entries = [Entry(label="large-only", policy="large-only"),
               Entry(label="rstitch", policy="rstitch", params={"tau": 0.12}, tau=0.12),
               Entry(label="rstitch + KV sessions", policy="rstitch", params={"tau": 0.12}, tau=0.12, deployment=KV)]
    by = {r.entry.label: r for r in rows(_run(tmp_path, entries))}
    assert large_compute(by["rstitch"], {}) == pytest.approx(106 / 149)
    assert large_compute(by["rstitch + KV sessions"], {}) is None
    line = next(x for x in main_table(list(by.values())).splitlines() if x.startswith("| rstitch + KV"))
    assert "n/a" in line


def test_pareto_plot_is_written(tmp_path, fake_serve):
    pytest.importorskip("matplotlib")
    from relay_ray.quality.matrix_plot import plot

    entries = [Entry(label="large-only", policy="large-only"), Entry(label="small-only", policy="small-only")]
    entries += [Entry(label=f"rstitch tau={t}", policy="rstitch", params={"tau": t}, tau=t, group=Group.TAU_SWEEP)
                for t in (0.05, 0.2)]
    results = _run(tmp_path, entries)
    plot(rows(results), tmp_path / "p.png", "test")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speculative_rows_count_every_verified_position(tmp_path):
    """With the real arith-small as the draft over gold answers: k + 1 positions per step, so
    speculative decoding computes at least as many large positions as large-only."""
    pytest.importorskip("transformers")
    from relay_ray.quality.matrix_report import spec_compute_shares
    from relay_ray.quality.matrix_run import EntryResult, MatrixResults, Pass
    from relay_ray.quality.runner import ItemResult, SegmentStat
    from relay_ray.tasks.splits import eval_splits

    problems = eval_splits()["dev"][:2]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(p.record()) for p in problems) + "\n")

    def item(p):
        n = 200  # any length: only the prompt's prefill and the trace's matches count
        return ItemResult(id=p.id, correct=True, predicted=str(p.answer), gold=str(p.answer), large_tokens=n,
                          text=p.completion, segments=(SegmentStat(large=True, num_tokens=n, num_prompt_tokens=40),))

    def record(label, deployment):
        entry = Entry(label=label, policy="large-only", deployment=deployment)
        return EntryResult(entry=entry, full=Pass(concurrency=16, wall_s=1.0, params={},
                                                  results=[item(p) for p in problems]))

    results = MatrixResults(meta={"data": str(data)},
                            entries={"large-only": record("large-only", SCALED), "spec": record("spec", SPEC)})
    shares = spec_compute_shares(results, "demo-models/arith-small", k=4)
    assert set(shares) == {"spec"}
    # arith-small predicts ~98% of a gold trace's tokens: nearly every draft is accepted, each step
    # writes ~5 tokens for 5 positions, and the few rejections cost 5 positions for 1-4 tokens
    assert 1.0 < shares["spec"] < 1.1


def test_targets_table_checks_the_issue_targets(tmp_path, fake_serve):
    from relay_ray.quality.matrix_report import targets_table

    entries = [Entry(label="large-only", policy="large-only"), Entry(label="small-only", policy="small-only"),
               Entry(label="rstitch", policy="rstitch", params={"tau": 0.12}, tau=0.12),
               Entry(label="large-only x2", policy="large-only", deployment=LARGE_X2, group=Group.PEER,
                     latency=False)]
    text = targets_table(rows(_run(tmp_path, entries)))
    lines = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    # the fake rstitch is as accurate as large-only (37/40 each) and 7x faster (2100 ms / 300 ms)
    assert lines["rstitch: accuracy within 1 point of large-only, McNemar p > 0.05"].rstrip(" |").endswith("yes")
    assert "7.00x" in lines["rstitch: >= 6x large-only's c=1 latency (aim 10x)"]
    # its switch into the large tier costs 2 + 30 ms = 1.6 of the large tier's 20 ms steps: missed
    assert "| 1.6 " in lines["rstitch: handoff into the large tier p50 <= 1.5 decode steps"]
    assert "**no**" in lines["rstitch: handoff into the large tier p50 <= 1.5 decode steps"]


def test_prefill_ahead_arms_differ_from_their_base_only_in_prefill_ahead():
    from relay_ray.quality.matrix import (
        CALLER_CHUNK, PREFILL_AHEAD_ARMS, SCALED_CHUNK, SCALED_GATED_CHUNK, SCALED_GATED_YIELD, SCALED_LOGPROBS,
        SCALED_SLEEP, SCALED_SPIN,
    )
    from relay_ray.quality.matrix_run import deployment_config

    gates, chunked, from_logprobs = set(), set(), set()
    for name, (base, settings, large_settings, *small) in PREFILL_AHEAD_ARMS.items():
        small_settings = small[0] if small else {}
        arm, plain = deployment_config(name), deployment_config(base)
        assert {key: getattr(arm.controller, key) for key in settings} == settings
        assert {key: getattr(arm.large, key) for key in large_settings} == large_settings
        assert {key: getattr(arm.small, key) for key in small_settings} == small_settings
        assert arm.controller.model_copy(update={k: getattr(plain.controller, k) for k in settings}) == plain.controller
        assert arm.large.model_copy(update={k: getattr(plain.large, k) for k in large_settings}) == plain.large
        assert arm.small.model_copy(update={k: getattr(plain.small, k) for k in small_settings}) == plain.small
        assert arm.model_copy(update={"controller": plain.controller, "large": plain.large, "small": plain.small}) == plain
        if not arm.small.entropy_in_engine:
            from_logprobs.add(name)
        if arm.controller.prefill_ahead:
            gates.add(arm.controller.prefill_ahead_hide_probability)
        if arm.large.first_chunk_tokens:
            chunked.add(name)
    assert gates == {0.0, 0.5}  # ungated and gated warm-ups
    # the served config chunks; every arm but the first-chunk arms pins it off
    assert deployment_config(SCALED).large.first_chunk_tokens == 1
    assert chunked == {SCALED_CHUNK, SCALED_GATED_CHUNK, SCALED_GATED_YIELD, SCALED_LOGPROBS, SCALED_SLEEP, SCALED_SPIN,
                       CALLER_CHUNK}
    # the served config runs the small tier's rule in its engine; one arm returns logprobs instead
    assert deployment_config(SCALED).small.entropy_in_engine and from_logprobs == {SCALED_LOGPROBS}


def test_ablation_arms_run_in_pairs_against_their_own_large_only(tmp_path, fake_serve):
    from relay_ray.quality.matrix import (
        CALLER_ABL, CALLER_CHUNK, CALLER_GATED, CALLER_PA, SCALED_CHUNK, SCALED_GATED,
        SCALED_GATED_CHUNK, SCALED_GATED_YIELD, SCALED_LOGPROBS, SCALED_PA, SCALED_SLEEP, SCALED_SPIN,
        prefill_ahead_ablation,
    )
    from relay_ray.quality.matrix_ablation import ablation_table

    arms = prefill_ahead_ablation(0.12, "calibrated", {"cues": ["Next,"]})
    assert [e for e in arms if e.full] == [] and {e.group for e in arms} == {Group.HANDOFF}
    assert [e.label for e in final_plan(DECISIONS)][-len(arms):] == [e.label for e in arms]
    entries = [Entry(label="large-only", policy="large-only"), Entry(label="small-only", policy="small-only")] + arms
    check_plan(entries)
    by = {r.entry.label: r for r in rows(_run(tmp_path, entries))}
    assert [name for name, _ in fake_serve] == [SCALED, ABLATION, SCALED_PA, SCALED_GATED, SCALED_CHUNK, SCALED_GATED_CHUNK,
                          SCALED_LOGPROBS, SCALED_GATED_YIELD, SCALED_SLEEP, SCALED_SPIN, CALLER_ABL, CALLER_PA,
                          CALLER_GATED, CALLER_CHUNK]
    # steps count against the ablation's own large-only (20 ms per token in the fake)
    assert by["rstitch, prefill-ahead"].into_large_p50_steps == pytest.approx(32.0 / 20.0)
    assert by["relayllm, prefill-ahead off"].into_large_uncached_p50 == 100
    lines = ablation_table(list(by.values())).splitlines()
    arm_lines = [x for x in lines if x.startswith(("| rstitch", "| relaygen", "| relayllm"))]
    chunk, gated_chunk = "off, one-token first chunk", "gated, one-token first chunk"
    logprobs = "off, one-token first chunk, small-tier rule from logprobs"
    yields = "gated, one-token first chunk, large engine niceness 10"
    sleeps = "off, one-token first chunk, engines sleep 30 µs between polls"
    spins = "off, one-token first chunk, engines busy-loop 10 ms after each message, then sleep 30 µs between polls"
    assert len(arm_lines) == 18 and all("32 (1.60)" in x for x in arm_lines)
    assert [x.split("|")[2].strip() for x in arm_lines] == ["off"] * 2 + ["on"] * 2 + ["gated"] * 2 + [
        chunk] * 2 + [gated_chunk] * 2 + [logprobs, yields, sleeps, spins, "off", "on", "gated", chunk]
    assert [x.split("|")[4].strip() for x in arm_lines] == ["—", "—"] + ["1.00x"] * 12 + ["—"] + ["1.00x"] * 3
    assert {x.split("|")[-2].strip() for x in arm_lines} == {"20"}  # the engine's step, from the segments
    assert ablation_table([by["rstitch"]] if "rstitch" in by else []) == ""
