"""Security on the served application: client tokens, closed tier ports, TLS through the
gateway. The ``edge`` application requires a bearer token (conftest)."""

from __future__ import annotations

import asyncio
import datetime
import queue
import re
import subprocess
import sys
import threading
import time

import grpc
import pytest

from relay_ray.client import RelayClient, build_request
from relay_ray.types import SegmentJob, StopRule
from relay_ray.v1 import relay_pb2_grpc as rpb_grpc
from relay_ray.v1 import segment_pb2 as spb
from relay_ray.v1 import segment_pb2_grpc as spb_grpc
from tests.integration.conftest import EDGE_TOKEN, EDGE_TOKEN_2

pytestmark = pytest.mark.integration
APP = "edge"
MSG = build_request("So we add 1 and 2.", "small-only", max_new_tokens=4)


async def _codes(address: str, metadata_of, count: int, concurrency: int = 4) -> list[str]:
    """``count`` calls, ``concurrency`` at a time (within the edge app's admission limit: the
    proxy admits before the controller authenticates)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpb_grpc.RelayServiceStub(channel)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> str:
            async with gate:
                try:
                    await stub.Generate(MSG, metadata=metadata_of(i), timeout=30)
                    return "OK"
                except grpc.aio.AioRpcError as exc:
                    return exc.code().name
        return await asyncio.gather(*(one(i) for i in range(count)))


def test_calls_without_a_valid_token_are_unauthenticated(relay_server):
    def metadata_of(i: int):
        app = (("application", APP),)
        return app if i % 2 else app + (("authorization", f"Bearer wrong-{i}"),)
    codes = asyncio.run(_codes(relay_server.address, metadata_of, 1000))
    assert set(codes) == {"UNAUTHENTICATED"} and len(codes) == 1000
    for token in (EDGE_TOKEN, EDGE_TOKEN_2):  # both tokens of the rotation are served
        with RelayClient(relay_server.address, APP, timeout_s=60, token=token) as client:
            assert client.generate(MSG).stats.small_tokens > 0


def test_a_message_over_the_proxy_limit_is_refused_by_grpc_before_the_controller(relay_server):
    from relay_ray.controller.limits import InputLimits
    from relay_ray.serve.local import proxy_message_env

    (limit,) = (int(v) for v in proxy_message_env(InputLimits()).values())
    oversized = build_request("x" * (limit + 1), "small-only", max_new_tokens=4)
    with grpc.insecure_channel(relay_server.address) as channel:
        stub = rpb_grpc.RelayServiceStub(channel)
        metadata = (("application", APP), ("authorization", f"Bearer {EDGE_TOKEN}"))
        started = time.perf_counter()
        with pytest.raises(grpc.RpcError) as refused:
            stub.Generate(oversized, metadata=metadata, timeout=30)
        elapsed = time.perf_counter() - started
        # gRPC's own check names the sizes; the controller's would say "bytes exceed the limit"
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
        assert "larger than max" in refused.value.details(), refused.value.details()
        assert elapsed < 5.0
        assert stub.Generate(MSG, metadata=metadata, timeout=60).stats.small_tokens > 0  # and it serves on


def test_a_token_added_to_the_file_is_accepted_and_removed_again(relay_server):
    path = relay_server.tokens_file
    original = path.read_text()
    new = "edge-token-rotated-91e2"
    try:
        path.write_text(original + new + "\n")
        assert _eventually_code(relay_server.address, new) == "OK"
    finally:
        path.write_text(original)
    assert _eventually_code(relay_server.address, new) == "UNAUTHENTICATED"


def _eventually_code(address: str, token: str, timeout_s: float = 20.0) -> str:
    deadline = time.monotonic() + timeout_s
    want = None
    while True:
        with RelayClient(address, APP, timeout_s=30, token=token) as client:
            try:
                client.generate(MSG)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
        want = want or ("OK" if code == "UNAUTHENTICATED" else "UNAUTHENTICATED")
        if code == want or time.monotonic() > deadline:
            return code
        time.sleep(1.0)


def _tier_endpoint() -> str:
    from ray import serve

    job = SegmentJob("probe", 0, StopRule(max_new_tokens=1), prefix_token_ids=(1, 2, 3))
    handle = serve.get_deployment_handle("SmallTier", app_name=APP)
    return handle.run_segment.remote(job).result(timeout_s=60).endpoint


def test_tier_ports_refuse_callers_without_the_application_secret(relay_server):
    endpoint = _tier_endpoint()
    assert endpoint
    job = spb.SegmentJob(request_id="x", stop=spb.StopRule(max_new_tokens=4))
    job.prefix_token_ids.ids.extend([1, 2, 3])
    with grpc.insecure_channel(endpoint) as channel:
        stub = spb_grpc.SegmentServiceStub(channel)
        calls = [lambda md: stub.Describe(spb.DescribeRequest(), metadata=md, timeout=10),
                 lambda md: stub.Prepare(spb.PrepareRequest(text="hello"), metadata=md, timeout=10),
                 lambda md: list(stub.RunSegment(job, metadata=md, timeout=10))]
        codes = []
        for i in range(100):
            metadata = () if i % 2 else (("relay-tier-secret", f"guess-{i}"),)
            try:
                calls[i % 3](metadata)
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
    assert codes == ["UNAUTHENTICATED"] * 100


def _self_signed(tmp_path) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    return cert_pem, key_pem


def _announced_port(gateway: subprocess.Popen, err_path, timeout_s: float = 60.0) -> int:
    """The port from the gateway's "TLS gateway on host:port -> upstream" line. Other lines
    (gRPC's absl start-up warnings, on stderr, are kept apart) are skipped; bounded in time."""
    found: queue.Queue = queue.Queue()

    def read() -> None:
        for line in gateway.stdout:
            match = re.search(r":(\d+) ->", line)
            if match:
                found.put(int(match.group(1)))
                return
        found.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        port = found.get(timeout=timeout_s)
    except queue.Empty:
        port = None
    if port is None:
        pytest.fail(f"the gateway announced no port within {timeout_s:.0f} s (exit code {gateway.poll()}); "
                    f"stderr: {err_path.read_text()[-2000:]}")
    return port


def test_tls_gateway_serves_tls_clients_and_refuses_plaintext(relay_server, tmp_path):
    cert_pem, _ = _self_signed(tmp_path)
    gateway_err = (tmp_path / "gateway.err").open("w")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "relay_ray.cli", "gateway", "--listen", "localhost:0", "--upstream",
         relay_server.address, "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")],
        stdout=subprocess.PIPE, stderr=gateway_err, text=True)
    try:
        port = _announced_port(gateway, tmp_path / "gateway.err")
        address = f"localhost:{port}"
        with RelayClient(address, APP, timeout_s=60, token=EDGE_TOKEN, tls_ca=cert_pem) as client:
            response = client.generate(MSG)
            assert response.stats.small_tokens > 0
            events = list(client.generate_stream(MSG))
            assert events[-1].final.text == response.text
        with RelayClient(address, APP, timeout_s=60, tls_ca=cert_pem) as client:  # TLS, but no token
            with pytest.raises(grpc.RpcError) as no_token:
                client.generate(MSG)
            assert no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with RelayClient(address, APP, timeout_s=5, token=EDGE_TOKEN, resume_attempts=0) as plain:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as refused:
                plain.generate(MSG)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() - started < 5
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
        gateway_err.close()
