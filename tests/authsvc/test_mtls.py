"""Mutual TLS: a client certificate whose CN names a registered client authenticates the caller.

Real certificates (a throwaway CA, a server certificate for 127.0.0.1, client certificates) and a
real TLS server on port 0.
"""

from __future__ import annotations

import datetime
import ipaddress
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


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: str,
    *,
    server: bool = False,
) -> tuple[bytes, bytes]:
    """A certificate for `subject` signed by `issuer_key`, and its private key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    certificate = builder.sign(issuer_key, hashes.SHA256())
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), pem_key


class Pki:
    """A CA and certificates it signs, written as files where the server expects them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("authsvc test CA"))
            .issuer_name(_name("authsvc test CA"))
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )

    def issue(self, common_name: str, *, server: bool = False) -> tuple[bytes, bytes]:
        return _certificate(common_name, self.ca_key, "authsvc test CA", server=server)

    def write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path


@pytest.fixture
async def tls_authority(tmp_path: Path):
    pki = Pki(tmp_path)
    server_cert, server_key = pki.issue("127.0.0.1", server=True)
    async with start_authority(
        tmp_path / "data",
        tls_cert_file=pki.write("server.pem", server_cert),
        tls_key_file=pki.write("server.key", server_key),
        tls_client_ca_file=pki.write("ca.pem", pki.ca_cert),
    ) as running:
        yield running, pki


def _channel(running: RunningAuthority, pki: Pki, cert: bytes, key: bytes) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert, private_key=key, certificate_chain=cert
    )
    return grpc.aio.secure_channel(running.address, credentials)


async def test_a_client_certificate_authenticates_its_client(tls_authority):
    running, pki = tls_authority
    issuer = await running.create_client(
        "login-frontend", scopes=["authsvc:issue"], audiences=[running.settings.audience]
    )
    app = await running.create_client(
        "app", grant_types=["refresh_token"], scopes=["read"], audiences=["api"]
    )
    cert, key = pki.issue(issuer.client_id)

    async with _channel(running, pki, cert, key) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        pair = await tokens.IssueTokenPair(
            pb.IssueTokenPairRequest(subject="alice", client_id=app.client_id)
        )

    assert pair.refresh_token.startswith("asrt_")


async def test_a_certificate_client_gets_only_its_registered_permissions(tls_authority):
    running, pki = tls_authority
    weak = await running.create_client("weak", scopes=["read"], audiences=["api"])
    cert, key = pki.issue(weak.client_id)

    async with _channel(running, pki, cert, key) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tokens.RevokeFamily(pb.RevokeFamilyRequest(family_id="any"))

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert ("oauth-error", "insufficient_scope") in tuple(refused.value.trailing_metadata())


async def test_a_certificate_naming_no_client_is_unauthenticated(tls_authority):
    running, pki = tls_authority
    cert, key = pki.issue("nobody-registered-this")

    async with _channel(running, pki, cert, key) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"))

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_disabled_client_certificate_is_unauthenticated(tls_authority):
    running, pki = tls_authority
    client = await running.create_client("ops", scopes=["authsvc:sessions"])
    await running.authority.revoke_client(client.client_id, disable=True)
    cert, key = pki.issue(client.client_id)

    async with _channel(running, pki, cert, key) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tokens.ListSessions(pb.ListSessionsRequest(subject="alice"))

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_certificate_from_another_ca_never_completes_the_handshake(tls_authority, tmp_path):
    running, pki = tls_authority
    stranger = Pki(tmp_path / "other")
    cert, key = stranger.issue("admin")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert, private_key=key, certificate_chain=cert
    )

    async with grpc.aio.secure_channel(running.address, credentials) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tokens.PublishKeys(pb.PublishKeysRequest(), timeout=5)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_no_client_certificate_never_completes_the_handshake(tls_authority):
    running, pki = tls_authority
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_cert)

    async with grpc.aio.secure_channel(running.address, credentials) as channel:
        tokens = authsvc_pb2_grpc.TokenServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await tokens.PublishKeys(pb.PublishKeysRequest(), timeout=5)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
