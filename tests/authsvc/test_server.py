"""The gRPC server: health, reflection, the graceful stop (in process, and `authsvc serve`
under SIGTERM as a real subprocess), and TLS files that cannot work."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed448
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authsvc.config import ConfigError
from authsvc.keys.sealing import new_kek_text
from authsvc.rpc.server import stop_server
from authsvc.testing import RunningAuthority, start_authority
from tests.authsvc.calls import refused
from tests.authsvc.processes import free_port, run_to_end, start_authsvc
from tests.gateway.certificates import CertificateAuthority, write_pem

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ["authsvc.v1.TokenService", "authsvc.v1.AuthorizationService"]
BOUND = 20.0  # seconds for anything to happen before a test gives up


@pytest.mark.parametrize("service", ["", *SERVICES])
async def test_health_is_serving(channel: grpc.aio.Channel, service: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=service))
    assert response.status == SERVING


async def test_health_watch_streams_the_status(channel: grpc.aio.Channel) -> None:
    # Watch is how grpc's client-side health checking and many balancers follow a server; its
    # handler writes with context.write() instead of yielding, and must survive our interceptors.
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    try:
        assert (await asyncio.wait_for(watch.read(), BOUND)).status == SERVING
    finally:
        watch.cancel()


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflection.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    names = {s.name for s in response.list_services_response.service}
    assert names >= {*SERVICES, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


async def test_oversized_request_is_refused_by_the_transport(tokens) -> None:
    request = pb.VerifyRequest(token="x" * (65 * 1024), audience="api")
    assert (await refused(tokens.Verify(request)))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_graceful_stop_serves_calls_in_flight_and_refuses_new_ones(
    running: RunningAuthority, tokens, admin, pair: pb.TokenPair
) -> None:
    latest = running.authority.ctx.feed.cursor
    async with grpc.aio.insecure_channel(running.address) as side:
        health = health_pb2_grpc.HealthStub(side).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await asyncio.wait_for(health.read(), BOUND)).status == SERVING
        # The call in flight: a revocation stream, caught up (its first heartbeat).
        stream = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=latest), metadata=admin)
        assert (await asyncio.wait_for(stream.read(), BOUND)).WhichOneof("event") == "heartbeat"

        stopping = asyncio.ensure_future(stop_server(running.server, grace=BOUND))
        assert (await asyncio.wait_for(health.read(), BOUND)).status == NOT_SERVING
        health.cancel()
        await _until_refused(running.address)

        # Within the grace period the call in flight is still served: a revocation made now
        # (through the domain, as no new call gets in) reaches it.
        await running.authority.revoke_family(pair.family_id)
        while True:
            event = await asyncio.wait_for(stream.read(), BOUND)
            if event.WhichOneof("event") == "family_revoked":
                break
        assert event.family_revoked == pair.family_id
        assert not stopping.done()
        # The last call ends: the stop completes without waiting out the grace period.
        stream.cancel()
        await asyncio.wait_for(stopping, BOUND)


async def _until_refused(address: str) -> None:
    """New calls are refused once the server stops accepting them (bounded wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    async with grpc.aio.insecure_channel(address) as fresh:
        keys = authsvc_pb2_grpc.TokenServiceStub(fresh).PublishKeys
        while loop.time() < deadline:
            try:
                await keys(pb.PublishKeysRequest(), timeout=1)
            except grpc.aio.AioRpcError as exc:
                refusal = exc.code()
                break
        else:
            pytest.fail("new calls were still accepted after the graceful stop began")
    assert refusal == grpc.StatusCode.UNAVAILABLE


# `authsvc serve` as a process


@dataclass(frozen=True)
class Served:
    process: asyncio.subprocess.Process
    address: str
    gateway_url: str | None  # the embedded gateway's, where it runs


@pytest.fixture(params=["grpc-only", "embedded-gateway"])
async def served(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "AUTHSVC_DATA_DIR": str(tmp_path),
        "AUTHSVC_KEK": new_kek_text(),
        "AUTHSVC_GRPC_ADDRESS": address,
        "AUTHSVC_METRICS_ADDRESS": "127.0.0.1:0",
        "AUTHSVC_SHUTDOWN_GRACE": "1",
    }
    command, gateway_url = ["serve"], None
    if request.param == "embedded-gateway":  # what `make run` starts: dev mode embeds it
        gateway_address = f"127.0.0.1:{free_port()}"
        env["AUTHSVC_GATEWAY_ADDRESS"] = gateway_address
        command, gateway_url = ["serve", "--dev"], f"http://{gateway_address}"
    process = await start_authsvc(env, *command)
    try:
        yield Served(process, address, gateway_url)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_stops_authsvc_serve_gracefully(served: Served) -> None:
    process, address = served.process, served.address
    async with grpc.aio.insecure_channel(address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), wait_for_ready=True, timeout=BOUND
        )
        status = None
        while status != SERVING:  # each read waits for the next change, within BOUND
            status = (await watch.read()).status
        keys = await authsvc_pb2_grpc.TokenServiceStub(channel).PublishKeys(pb.PublishKeysRequest())
        assert keys.keys
        if served.gateway_url is not None:
            async with httpx.AsyncClient(base_url=served.gateway_url) as http:
                assert (await http.get("/readyz")).status_code == 200

        process.send_signal(signal.SIGTERM)
        # The open Watch is a call in flight: it hears NOT_SERVING before the server goes.
        assert (await watch.read()).status == NOT_SERVING
        returncode = await asyncio.wait_for(process.wait(), BOUND)
    _, stderr = await process.communicate()
    assert returncode == 0, stderr.decode()[-2000:]
    assert b'"message": "stopped"' in stderr
    # Background work (the database health probe among it) stopped cleanly: nothing left
    # running, nothing complained about on the way out.
    for complaint in (b"Task was destroyed", b'"level": "warning"', b'"level": "error"'):
        assert complaint not in stderr, stderr.decode()[-2000:]
    async with grpc.aio.insecure_channel(address) as channel:
        late = authsvc_pb2_grpc.TokenServiceStub(channel).PublishKeys(
            pb.PublishKeysRequest(), timeout=2
        )
        assert (await refused(late))[0] == grpc.StatusCode.UNAVAILABLE
    if served.gateway_url is not None:  # stopped by authsvc, not by a signal of its own
        async with httpx.AsyncClient(base_url=served.gateway_url) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get("/readyz")


async def test_an_embedded_gateway_without_its_client_stops_the_start_before_it_listens(
    tmp_path: Path,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "AUTHSVC_DATA_DIR": str(tmp_path),
        "AUTHSVC_KEK": new_kek_text(),
        "AUTHSVC_GRPC_ADDRESS": address,
        "AUTHSVC_GATEWAY_EMBEDDED": "true",  # outside dev mode: no dev credentials to fall back on
    }
    env.pop("AUTHSVC_GATEWAY_CLIENT_ID", None)
    code, text = await run_to_end(env, "serve")
    assert code == 2, text[-2000:]
    assert "authsvc: configuration error:" in text
    assert "set AUTHSVC_GATEWAY_CLIENT_ID and AUTHSVC_GATEWAY_CLIENT_SECRET" in text
    assert '"message": "serving"' not in text  # nothing listened
    for leftover in ("Traceback", "Exception ignored"):  # a server left running at exit
        assert leftover not in text, text[-2000:]


# TLS files that cannot work


def _ed448_pair(folder: Path) -> tuple[Path, Path]:
    """A well-formed, matching certificate and key that gRPC's TLS does not support."""
    key = ed448.Ed448PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authsvc")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, None)
    )
    return write_pem(folder, "ed448", certificate, key)


def _tls_files(folder: Path, case: str) -> dict[str, Path]:
    """The AUTHSVC_TLS_* settings of one case ("good", or one broken file among good ones)."""
    ca = CertificateAuthority(folder)
    cert_file, key_file = ca.issue("authsvc", server=True)
    _, other_key = ca.issue("other", server=True)
    garbage = folder / "garbage.pem"
    garbage.write_text("not PEM at all\n")
    files = {"tls_cert_file": cert_file, "tls_key_file": key_file}
    if case == "missing-cert":
        files["tls_cert_file"] = folder / "absent.pem"
    elif case == "missing-key":
        files["tls_key_file"] = folder / "absent.key"
    elif case == "key-is-a-folder":
        files["tls_key_file"] = folder
    elif case == "garbage-cert":
        files["tls_cert_file"] = garbage
    elif case == "garbage-key":
        files["tls_key_file"] = garbage
    elif case == "key-of-another-cert":
        files["tls_key_file"] = other_key
    elif case == "garbage-client-ca":
        files["tls_client_ca_file"] = garbage
    elif case == "unsupported-algorithm":
        files["tls_cert_file"], files["tls_key_file"] = _ed448_pair(folder)
    return files


@pytest.mark.parametrize(
    ("case", "variable", "problem"),
    [
        pytest.param("missing-cert", "AUTHSVC_TLS_CERT_FILE", "No such file", id="missing-cert"),
        pytest.param("missing-key", "AUTHSVC_TLS_KEY_FILE", "No such file", id="missing-key"),
        pytest.param("key-is-a-folder", "AUTHSVC_TLS_KEY_FILE", "cannot read it", id="folder"),
        pytest.param("garbage-cert", "AUTHSVC_TLS_CERT_FILE", "not a PEM certificate",
                     id="garbage-cert"),
        pytest.param("garbage-key", "AUTHSVC_TLS_KEY_FILE", "not a PEM private key",
                     id="garbage-key"),
        pytest.param("key-of-another-cert", "AUTHSVC_TLS_KEY_FILE", "not the key of the certificate",
                     id="key-of-another-cert"),
        pytest.param("garbage-client-ca", "AUTHSVC_TLS_CLIENT_CA_FILE", "not a PEM certificate",
                     id="garbage-client-ca"),
        pytest.param("unsupported-algorithm", "AUTHSVC_TLS_CERT_FILE", "gRPC cannot use",
                     id="unsupported-algorithm"),
    ],
)  # fmt: skip
async def test_tls_files_that_cannot_work_are_named_with_what_is_wrong(
    tmp_path: Path, case: str, variable: str, problem: str
) -> None:
    files = _tls_files(tmp_path, case)
    with pytest.raises(ConfigError) as raised:
        async with start_authority(tmp_path, **files):
            pytest.fail("the server started")
    message = str(raised.value)
    assert variable in message
    assert problem in message
    assert "AUTHSVC_GRPC_ADDRESS" not in message  # the port is not to blame


async def test_a_missing_tls_key_stops_authsvc_serve_with_exit_2(tmp_path: Path) -> None:
    files = _tls_files(tmp_path, "missing-key")
    env = {
        **os.environ,
        "AUTHSVC_DATA_DIR": str(tmp_path / "data"),
        "AUTHSVC_KEK": new_kek_text(),
        "AUTHSVC_GRPC_ADDRESS": "127.0.0.1:0",
        "AUTHSVC_METRICS_ADDRESS": "",
        "AUTHSVC_TLS_CERT_FILE": str(files["tls_cert_file"]),
        "AUTHSVC_TLS_KEY_FILE": str(files["tls_key_file"]),
    }
    code, text = await run_to_end(env, "serve")
    assert code == 2, text[-2000:]
    assert (
        f"authsvc: configuration error: AUTHSVC_TLS_KEY_FILE={files['tls_key_file']}: cannot "
        "read it (No such file or directory)"
    ) in text
    assert "Traceback" not in text


async def test_with_tls_a_taken_port_is_still_blamed_on_the_address(tmp_path: Path) -> None:
    files = _tls_files(tmp_path, "good")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ConfigError, match=f"AUTHSVC_GRPC_ADDRESS={address}: cannot listen"):
            async with start_authority(tmp_path, grpc_address=address, **files):
                pytest.fail("the server started")
