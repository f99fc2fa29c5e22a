"""The channel to authsvc over TLS and mutual TLS, against a real authsvc serving TLS."""

from __future__ import annotations

from pathlib import Path

import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_gateway.backend import GrpcBackend, channel_credentials
from authsvc_gateway.config import GATEWAY_SCOPES, ConfigError, GatewayConfig
from authsvc_gateway.errors import TemporarilyUnavailable

from authsvc.testing import start_authority
from tests.gateway.certificates import CertificateAuthority


@pytest.mark.parametrize("mutual", [pytest.param(False, id="tls"), pytest.param(True, id="mtls")])
async def test_the_gateway_reaches_authsvc_over_tls(tmp_path: Path, mutual: bool) -> None:
    (tmp_path / "pki").mkdir()
    ca = CertificateAuthority(tmp_path / "pki")
    server_cert, server_key = ca.issue("authsvc", server=True)
    tls = {"tls_cert_file": server_cert, "tls_key_file": server_key}
    if mutual:
        tls["tls_client_ca_file"] = ca.ca_file
    async with start_authority(tmp_path, **tls) as running:
        own = await running.create_client(
            "gateway",
            grant_types=["client_credentials"],
            scopes=GATEWAY_SCOPES,
            audiences=[running.settings.audience],
        )
        cert_file, key_file = ca.issue(own.client_id, server=False) if mutual else (None, None)
        config = GatewayConfig(
            client_id=own.client_id,
            client_secret=own.client_secret,
            upstream=running.address,
            upstream_ca_file=ca.ca_file,
            upstream_cert_file=cert_file,
            upstream_key_file=key_file,
            upstream_timeout=5.0,
        )
        async with GrpcBackend.connect(config) as backend:
            found = await backend.get_client(pb.GetClientRequest(client_id=own.client_id))
            assert found.client_id == own.client_id

        plaintext = GatewayConfig(
            client_id=own.client_id,
            client_secret=own.client_secret,
            upstream=running.address,
            upstream_timeout=2.0,
        )
        async with GrpcBackend.connect(plaintext) as backend:
            with pytest.raises(TemporarilyUnavailable):
                await backend.get_client(pb.GetClientRequest(client_id=own.client_id))


def test_a_client_certificate_needs_its_key_and_a_ca(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KEY_FILE"):
        GatewayConfig(client_id="g", client_secret="s", upstream_cert_file=tmp_path / "c.pem")
    with pytest.raises(ConfigError, match="CA_FILE"):
        GatewayConfig(
            client_id="g",
            client_secret="s",
            upstream_cert_file=tmp_path / "c.pem",
            upstream_key_file=tmp_path / "c.key",
        )


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ("ca", "AUTHSVC_GATEWAY_UPSTREAM_CA_FILE"),
        ("cert", "AUTHSVC_GATEWAY_UPSTREAM_CERT_FILE"),
        ("key", "AUTHSVC_GATEWAY_UPSTREAM_KEY_FILE"),
    ],
)
def test_an_unreadable_tls_file_is_named_by_its_variable(
    tmp_path: Path, missing: str, variable: str
) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for name, path in files.items():
        if name != missing:
            path.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    config = GatewayConfig(
        client_id="g",
        client_secret="s",
        upstream_ca_file=files["ca"],
        upstream_cert_file=files["cert"],
        upstream_key_file=files["key"],
    )
    with pytest.raises(ConfigError, match=f"^{variable}=.*: cannot read it"):
        channel_credentials(config)


@pytest.mark.parametrize(
    ("upstream", "plaintext"),
    [
        pytest.param("127.0.0.1:50051", False, id="loopback"),
        pytest.param("localhost:50051", False, id="localhost"),
        pytest.param("unix:/run/authsvc.sock", False, id="unix-socket"),
        pytest.param("authsvc.internal:50051", True, id="mesh-by-choice"),
    ],
)
def test_plaintext_goes_where_nothing_leaves_the_machine_or_by_choice(
    upstream: str, plaintext: bool
) -> None:
    config = GatewayConfig(
        client_id="g", client_secret="s", upstream=upstream, upstream_plaintext=plaintext
    )
    assert channel_credentials(config) is None


@pytest.mark.parametrize("upstream", ["authsvc.internal:50051", "10.0.0.7:50051", "[::]:50051"])
def test_a_remote_upstream_without_tls_is_refused_at_start(upstream: str) -> None:
    config = GatewayConfig(client_id="g", client_secret="s", upstream=upstream)
    with pytest.raises(ConfigError, match=r"UPSTREAM_CA_FILE.*UPSTREAM_PLAINTEXT"):
        channel_credentials(config)


async def test_the_backend_opens_no_plaintext_channel_to_a_remote_upstream() -> None:
    config = GatewayConfig(client_id="g", client_secret="s", upstream="authsvc.internal:50051")
    with pytest.raises(ConfigError, match="not on this machine"):
        async with GrpcBackend.connect(config):
            pass
