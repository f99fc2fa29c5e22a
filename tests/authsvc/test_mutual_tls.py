"""Callers authenticated by client certificate (mutual TLS): the certificate's CN is a registered
client id, and that client's registered scopes are the caller's permissions."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authsvc.testing import RunningAuthority, start_authority
from tests.authsvc.calls import INSUFFICIENT_SCOPE, UNAUTHENTICATED, bearer, refused


@dataclass(frozen=True)
class Issued:
    key: bytes
    cert: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Authority:
    """A throwaway certificate authority."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, *, server: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(_pem(key), cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class Mtls:
    running: RunningAuthority
    ca: Authority

    def channel(self, client: Issued | None, ca: Authority | None = None) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(ca or self.ca).pem,
            private_key=client.key if client else None,
            certificate_chain=client.cert if client else None,
        )
        return grpc.aio.secure_channel(self.running.address, credentials)


@pytest.fixture
async def mtls(tmp_path: Path) -> AsyncIterator[Mtls]:
    ca = Authority("authsvc test CA")
    server = ca.issue("authsvc", server=True)
    files = {"server.key": server.key, "server.pem": server.cert, "ca.pem": ca.pem}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    async with start_authority(
        tmp_path,
        tls_key_file=tmp_path / "server.key",
        tls_cert_file=tmp_path / "server.pem",
        tls_client_ca_file=tmp_path / "ca.pem",
    ) as running:
        yield Mtls(running, ca)


async def _live_family(running: RunningAuthority) -> str:
    app = await running.create_client("app", grant_types=["refresh_token"], audiences=["api"])
    pair = await running.authority.issue_token_pair(subject="alice", client_id=app.client_id)
    return pair.family.family_id


async def test_a_client_certificate_authenticates_a_registered_client(mtls: Mtls) -> None:
    operator = await mtls.running.create_client("ops", scopes=["authsvc:revoke"])
    family = await _live_family(mtls.running)
    async with mtls.channel(mtls.ca.issue(operator.client_id)) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        response = await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=family))
        assert response.revoked
        # A stream is admitted the same way.
        stream = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=0))
        try:
            assert (await stream.read()).cursor > 0
        finally:
            stream.cancel()


async def test_the_certificate_client_has_only_its_registered_scopes(mtls: Mtls) -> None:
    reader = await mtls.running.create_client("reader", scopes=["authsvc:sessions"])
    family = await _live_family(mtls.running)
    async with mtls.channel(mtls.ca.issue(reader.client_id)) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"))
        revoking = tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id=family))
        assert (await refused(revoking))[:2] == INSUFFICIENT_SCOPE
    assert await mtls.running.authority.list_sessions("alice")


@pytest.mark.parametrize("who", ["unknown", "disabled"])
async def test_a_certificate_for_no_enabled_client_is_unauthenticated(mtls: Mtls, who: str) -> None:
    operator = await mtls.running.create_client("ops", scopes=["authsvc:sessions"])
    if who == "disabled":
        await mtls.running.authority.revoke_client(operator.client_id, disable=True)
    common_name = operator.client_id if who == "disabled" else "nobody"
    async with mtls.channel(mtls.ca.issue(common_name)) as channel:
        listing = authsvc_pb2_grpc.TokenServiceStub(channel).ListSessions(
            pb.ListSessionsRequest(subject="alice")
        )
        refusal = await refused(listing)
    assert refusal[:2] == UNAUTHENTICATED
    assert refusal.description == (
        "caller credential rejected: the client certificate names no enabled client"
    )


async def test_a_bearer_token_still_works_over_mutual_tls(mtls: Mtls) -> None:
    nobody = mtls.ca.issue("nobody")  # the certificate proves nothing; the token does
    async with mtls.channel(nobody) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        admin = bearer(await mtls.running.admin_token())
        await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"), metadata=admin)


@pytest.mark.parametrize("client", ["none", "foreign-ca"])
async def test_the_handshake_needs_a_certificate_from_our_ca(mtls: Mtls, client: str) -> None:
    issued = Authority("someone else").issue("ops") if client == "foreign-ca" else None
    async with mtls.channel(issued) as channel:
        keys = authsvc_pb2_grpc.TokenServiceStub(channel).PublishKeys(
            pb.PublishKeysRequest(), timeout=5
        )
        assert (await refused(keys))[0] == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_callers_stream_ends_once_its_client_is_disabled(mtls: Mtls) -> None:
    watcher = await mtls.running.create_client("watcher")
    async with mtls.channel(mtls.ca.issue(watcher.client_id)) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        stream = tokens.WatchRevocations(pb.WatchRevocationsRequest(cursor=0))
        try:
            assert (await stream.read()).cursor > 0
            await mtls.running.authority.revoke_client(watcher.client_id, disable=True)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await _until_it_ends(stream)
        finally:
            stream.cancel()
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def _until_it_ends(stream: grpc.aio.UnaryStreamCall) -> None:
    """Read the backlog and heartbeats (one a second, each judged first) until the stream fails."""
    async with asyncio.timeout(5):
        while True:
            assert await stream.read() != grpc.aio.EOF
