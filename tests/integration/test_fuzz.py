"""Property-based fuzzing of RelayService on the served ``edge`` application.

Generated requests (well-formed, out of range, oversized, with control tokens, forged resume
tokens) and raw byte frames: every answer is a precise status (never INTERNAL or UNKNOWN),
no rejection stalls the server (none over 2 s), no replica restarts, memory stays flat, and a
probe stream in its own process streams throughout without a failure.

Speed is a measurement, not a suite bound (machines here differ 3x in speed): the suite prints
the rejection latencies and the probe's pace. ``RELAY_FUZZ_STRICT=1`` is the measured run of
docs/security.md, "Fuzzing": the client runs at ``SCHED_IDLE`` (it takes no CPU the server
wants, as a remote client would not), the baseline is 10 s (4 s otherwise; both at least 40
deltas of the probe), and it asserts issue 12's figures: at most 1% of rejections over
200 ms and the probe's inter-delta p99 within 3x of its pace before the fuzzing.
``RELAY_FUZZ_EXAMPLES`` sets the count: 1,000 by default, which keeps the suite within its time
budget; docs/security.md's measured runs name theirs (2,000 or 10,000).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay_ray.policies import REGISTRY
from relay_ray.serve.replicas import replica_pids, rss_mib
from relay_ray.v1 import relay_pb2 as rpb
from relay_ray.v1 import relay_pb2_grpc as rpb_grpc
from tests.integration.conftest import EDGE_TOKEN, ROOT, at_ray_worker_niceness

pytestmark = pytest.mark.integration
APP = "edge"
EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", "1000"))
STRICT = os.environ.get("RELAY_FUZZ_STRICT", "") == "1"
BASELINE_S = 10.0 if STRICT else 4.0
BASELINE_GAPS = 40  # and at least this many deltas: a slow machine fills 4 s with as few as 19
METADATA = (("application", APP), ("authorization", f"Bearer {EDGE_TOKEN}"))
PRECISE = {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}
CONTROL = ["<|im_start|>", "<think>", "</think>", "<call>", "</call>", "</s>", "<s>", "\x00", "\ud7ff", "é" * 3]
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, -1.0, 0.5, 1e300]))
INTS = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, 2, -1, 2**31 - 1]))
SHORT = st.text(max_size=40)
CONTENT = st.one_of(SHORT, st.lists(st.one_of(st.sampled_from(CONTROL), SHORT), max_size=4).map("".join))
TEXT = st.one_of(CONTENT, st.integers(0, 2_500_000).map(lambda n: "x" * n))  # up to twice the byte limit


@st.composite
def requests(draw) -> rpb.GenerateRequest:
    msg = rpb.GenerateRequest(request_id=draw(st.one_of(st.just(""), SHORT, st.text(min_size=129, max_size=300))))
    if draw(st.booleans()):
        msg.text = draw(TEXT)
    else:
        for _ in range(draw(st.sampled_from([0, 1, 2, 5, 300]))):
            msg.chat.messages.add(role=draw(st.sampled_from(["user", "system", "assistant", "tool", ""])),
                                  content=draw(CONTENT))
    name = draw(st.one_of(st.sampled_from(sorted(REGISTRY)), SHORT))
    msg.policy.name = name
    params = draw(st.sampled_from(["", "fixed_ratio", "relaygen", "rstitch", "relayllm", "random"]))
    if params == "fixed_ratio":
        msg.policy.fixed_ratio.large_tokens, msg.policy.fixed_ratio.small_tokens = draw(INTS), draw(INTS)
        msg.policy.fixed_ratio.first = draw(st.sampled_from([0, 1, 2, 99]))
    elif params == "relaygen":
        msg.policy.relaygen.cues.extend(draw(st.lists(SHORT, max_size=80)))
        msg.policy.relaygen.sentence_ends.extend(draw(st.lists(SHORT, max_size=5)))
        msg.policy.relaygen.min_tokens_after_return = draw(INTS)
    elif params == "rstitch":
        msg.policy.rstitch.tau = draw(FLOATS)
    elif params == "relayllm":
        msg.policy.relayllm.max_calls, msg.policy.relayllm.max_call_tokens = draw(INTS), draw(INTS)
        if draw(st.booleans()):
            msg.policy.relayllm.min_call_tokens = draw(INTS)
    elif params == "random":
        msg.policy.random.large_share, msg.policy.random.mean_large_tokens = draw(FLOATS), draw(FLOATS)
        msg.policy.random.routing_seed = draw(INTS)
    s = msg.sampling
    s.max_new_tokens = draw(st.sampled_from([-1, 0, 1, 2, 4, 8, 100_000, 2**31 - 1]))
    if draw(st.booleans()):
        s.temperature, s.top_p = draw(FLOATS), draw(FLOATS)
        s.top_k, s.seed = draw(INTS), draw(INTS)
    if draw(st.integers(0, 9)) == 0:
        msg.resume.token = draw(st.binary(max_size=200))
        msg.resume.output_token_ids.extend(draw(st.lists(INTS, max_size=20)))
        msg.resume.partial_token_ids.extend(draw(st.lists(INTS, max_size=20)))
    return msg


class ProbeProcess:
    """``stream_probe`` in its own process: it streams from the moment it starts until
    :meth:`stop`, which returns its gaps (``[monotonic end time, ms]``) and failures."""

    def __init__(self, address: str, ready_after_gaps: int) -> None:
        # Its standard error on a pipe of our own, read by a thread: communicate() reads stdout only.
        stderr_read, stderr_write = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.stream_probe", address, "--app", APP, "--token", EDGE_TOKEN,
             "--duration-s", "1800", "--ready-after-gaps", str(ready_after_gaps)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_write, text=True)
        os.close(stderr_write)
        self.ready = threading.Event()
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._read_stderr, args=(stderr_read,), daemon=True).start()

    def _read_stderr(self, fd: int) -> None:
        with open(fd, encoding="utf-8", errors="replace") as stderr:
            for line in stderr:  # ends when the probe exits
                if line.strip() == "ready":
                    self.ready.set()
                else:
                    self.stderr_lines.append(line)

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Block until the probe has measured its ``ready_after_gaps`` gaps; fail after
        ``timeout_s`` or if it exits first (its standard error in the message)."""
        deadline = time.monotonic() + timeout_s
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()  # our own child, by its pid
                self.proc.wait()
                pytest.fail(f"the probe did not reach its baseline in {timeout_s:.0f} s (exit "
                            f"{self.proc.returncode}): {''.join(self.stderr_lines)[-2000:]}")

    def stop(self, timeout_s: float = 120.0) -> dict:
        try:
            out = self.proc.communicate(timeout=timeout_s)[0]  # closes its stdin: the probe's stop signal
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its pid
            self.proc.communicate()
            raise
        return json.loads(out)


def _gaps_ms(gaps: list, since: float = -math.inf, until: float = math.inf) -> list[float]:
    return [gap for at, gap in gaps if since <= at <= until]


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else math.nan


def _at_lowest_priority() -> None:
    """Run the calling thread only on CPU time nothing else wants (SCHED_IDLE; niceness 19
    where that is refused). The fuzzing client shares two cores with the server it measures
    and spends most of its time building examples; a remote client would use none of the
    server's CPU, and at a normal priority it starves the probe's engines."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, 19)


def test_fuzzed_requests_get_precise_statuses_fast(relay_server):
    started = time.monotonic()
    probe = ProbeProcess(relay_server.address, BASELINE_GAPS)
    probe.wait_ready()  # the probe's pace on the idle server: enough deltas, and long enough
    time.sleep(max(0.0, BASELINE_S - (time.monotonic() - started)))
    pids = {dep: replica_pids(APP, dep) for dep in ("RelayController", "LargeTier", "SmallTier")}
    rss_before = {pid: rss_mib(pid) for group in pids.values() for pid in group}
    channel = grpc.insecure_channel(relay_server.address, options=[("grpc.max_send_message_length", 8 << 20)])
    stub = rpb_grpc.RelayServiceStub(channel)
    raw = channel.unary_unary("/relay_ray.v1.RelayService/Generate", lambda b: b, lambda b: b)
    rejected_s, imprecise = [], []

    slowest: list[tuple[float, str]] = []

    def check(call, what) -> None:
        if len(rejected_s) % 100 == 0:
            gc.collect()  # between calls: the client's own collector must not pause a timed call
        started = time.perf_counter()
        details = ""
        try:
            call()
            code = "OK"
        except grpc.RpcError as exc:
            code, details = exc.code().name, exc.details() or ""
        elapsed = time.perf_counter() - started
        if code not in PRECISE:
            imprecise.append(f"{code} {details[:120]!r} for {what()[:200]}")
        elif code != "OK":
            rejected_s.append(elapsed)
            if elapsed > 0.2:
                slowest.append((round(elapsed, 3), f"{details[:60]!r} for {what()[:100]}"))

    @settings(max_examples=EXAMPLES * 4 // 5, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(requests())
    def fuzz_requests(msg):
        check(lambda: stub.Generate(msg, metadata=METADATA, timeout=30), lambda: repr(msg))

    @settings(max_examples=EXAMPLES // 5, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=300), requests().map(lambda m: _mutate(m.SerializeToString()))))
    def fuzz_frames(frame):
        check(lambda: raw(frame, metadata=METADATA, timeout=30), lambda: f"raw frame {frame[:60]!r}")

    def fuzz() -> None:
        if STRICT:
            _at_lowest_priority()
        else:  # the niceness of Ray's workers: an equal share with the proxy and the controller
            at_ray_worker_niceness()
        fuzz_requests()
        fuzz_frames()

    fuzzing_from = time.monotonic()
    gc.disable()
    try:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(fuzz).result()
    finally:
        gc.enable()
        fuzzing_until = time.monotonic()
        probed = probe.stop()
        channel.close()
    assert imprecise == [], (len(imprecise), imprecise[:8])
    # A stalled replica answers in seconds (tokenizing a 1 MB prompt did); the CPU a busy machine
    # lends the client adds tens to hundreds of ms, measured and bounded only in the strict run.
    slow = sorted(s for s in rejected_s if s > 0.2)
    assert max(rejected_s, default=0) < 2.0, sorted(slowest)[-10:]
    if STRICT:
        assert len(slow) <= len(rejected_s) // 100, sorted(slowest)[-10:]
    after = {dep: replica_pids(APP, dep) for dep in pids}
    assert after == pids  # no replica crashed or restarted
    growth = {pid: rss_mib(pid) - before for pid, before in rss_before.items()}
    assert max(growth.values()) < 50, growth
    assert probed["failures"] == []
    before, during = _gaps_ms(probed["gaps"], until=fuzzing_from), _gaps_ms(probed["gaps"], fuzzing_from, fuzzing_until)
    assert len(before) >= BASELINE_GAPS and len(during) >= 20, (len(before), len(during))  # streamed throughout
    if STRICT:  # the target is 2x (docs/security.md); 3x for the noise of a 10 s baseline
        assert _p99(during) <= 3 * _p99(before), (_p99(during), _p99(before))
    print(f"\n{EXAMPLES} examples in {fuzzing_until - fuzzing_from:.0f} s; rejections: "
          f"{len(rejected_s)}, p99 {_p99(rejected_s) * 1000:.0f} ms, max {max(rejected_s) * 1000:.0f} ms, "
          f"{len(slow)} over 200 ms; probe inter-delta p99: {_p99(during):.0f} ms during fuzzing, "
          f"{_p99(before):.0f} ms before ({len(during)} and {len(before)} gaps)")
    for elapsed, what in sorted(slowest)[-5:]:
        print(f"  rejection in {elapsed} s: {what}")


def _mutate(frame: bytes) -> bytes:
    """A serialized request with some bytes flipped (a frame the protobuf parser may reject)."""
    data = bytearray(frame)
    for i in range(0, len(data), 7):
        data[i] ^= 0x5A
    return bytes(data)
