"""The grpc.aio server: authsvc.v1 services, standard health, reflection, caller authorization.

`start_server` binds (port 0 picks a free port, as tests do) and returns the running server with
its port. Health (grpc.health.v1, the same status for "" and each authsvc service) follows the
authority's `DatabaseHealth`: NOT_SERVING while the database does not answer. `stop_server` is
the graceful stop: health turns NOT_SERVING for good, new calls are refused, streams that never
end on their own (WatchRevocations) are ended if asked, and calls in flight get `grace` seconds
to finish before they are cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from authsvc_client import AUDIENCE_NOT_ACCEPTED
from authsvc_client.v1 import authsvc_pb2, authsvc_pb2_grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authsvc.authority import Authority
from authsvc.config import ConfigError, Settings
from authsvc.errors import AuthError, NotFound, Unauthenticated
from authsvc.health import DatabaseHealth, Listener, Verdict
from authsvc.metrics import Metrics
from authsvc.rpc.caller_auth import (
    BearerAuthenticator,
    Caller,
    CallerAuthInterceptor,
    CertificateAuthenticator,
    method_policies,
)
from authsvc.rpc.servicer import AuthorizationService, TokenService
from authsvc.rpc.status import status_for
from authsvc.tokens.access import AccessClaims

SERVICE_NAMES = tuple(
    service.full_name for service in authsvc_pb2.DESCRIPTOR.services_by_name.values()
)
# Every authsvc request is small; 64 KiB bounds what an unauthenticated caller can make us parse.
# The benchmarks build their baseline servers with the same options.
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024),
    ("grpc.so_reuseport", 0),
)


CALLER_CACHE_ENTRIES = 10_000


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: Any  # grpc_health.v1.health.aio.HealthServicer (untyped upstream)
    metrics: Metrics
    database_health: DatabaseHealth

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _caller_from_bearer(authority: Authority) -> BearerAuthenticator:
    # The token is verified on every call (expiry, revocation); the Caller it yields is built
    # once per token (a frozenset and a dataclass, a fifth of a cached verification).
    callers: dict[AccessClaims, Caller] = {}

    audience = authority.settings.audience

    def authenticate(token: str) -> Caller:
        try:
            claims = authority.verify(token, audience=audience)
        except AuthError as exc:
            if exc.description != AUDIENCE_NOT_ACCEPTED:
                raise
            # The commonest mistake: the token for an API, sent to authsvc itself.
            raise type(exc)(
                f"{AUDIENCE_NOT_ACCEPTED}: calls to authsvc need a token for audience {audience}"
            ) from None
        caller = callers.get(claims)
        if caller is None:
            if len(callers) >= CALLER_CACHE_ENTRIES:
                callers.clear()
            caller = callers[claims] = Caller(
                claims.client_id, frozenset(claims.scope), "bearer", claims
            )
        return caller

    return authenticate


def _caller_from_certificate(authority: Authority) -> CertificateAuthenticator:
    async def authenticate(common_name: str) -> Caller | None:
        try:
            client = await authority.get_client(common_name)
        except NotFound:
            # Said as such, not as "no credential": the certificate came, its client did not.
            raise Unauthenticated("the client certificate names no enabled client") from None
        except AuthError:
            return None
        return Caller(client.client_id, frozenset(client.scopes), "mtls")

    return authenticate


def _health_listener(servicer: Any) -> Listener:
    """Sets the status of "" and of every authsvc service on the gRPC health servicer."""

    async def publish(verdict: Verdict) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if verdict.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await servicer.set(name, status)

    return publish


def _read(variable: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: cannot read it ({exc.strerror or exc})") from exc


def _certificates(variable: str, path: Path) -> tuple[bytes, list[x509.Certificate]]:
    """The file's PEM and the certificates in it, the first one the server's own."""
    pem = _read(variable, path)
    try:
        return pem, x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError(
            f"{variable}={path}: not a PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from exc


def _private_key(path: Path) -> tuple[bytes, PrivateKeyTypes]:
    pem = _read("AUTHSVC_TLS_KEY_FILE", path)
    try:
        return pem, serialization.load_pem_private_key(pem, password=None)
    except TypeError as exc:  # cryptography's word for "encrypted, and no password given"
        raise ConfigError(
            f"AUTHSVC_TLS_KEY_FILE={path}: the key is encrypted, and gRPC needs it unencrypted"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"AUTHSVC_TLS_KEY_FILE={path}: not a PEM private key (-----BEGIN PRIVATE KEY-----)"
        ) from exc


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS from the AUTHSVC_TLS_* files, each checked first: gRPC says of a file it cannot use
    only that it cannot bind, so a wrong one is named here with what is wrong with it."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    cert_pem, chain = _certificates("AUTHSVC_TLS_CERT_FILE", settings.tls_cert_file)
    key_pem, key = _private_key(settings.tls_key_file)
    if _public_der(key.public_key()) != _public_der(chain[0].public_key()):
        raise ConfigError(
            f"AUTHSVC_TLS_KEY_FILE={settings.tls_key_file}: not the key of the certificate in "
            f"AUTHSVC_TLS_CERT_FILE={settings.tls_cert_file} (its first certificate must be the "
            "server's own)"
        )
    client_ca = (
        _certificates("AUTHSVC_TLS_CLIENT_CA_FILE", settings.tls_client_ca_file)[0]
        if settings.tls_client_ca_file
        else None
    )
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def _binds_without_tls(address: str) -> bool:
    """Whether a server without TLS can bind `address`; then it was the TLS that gRPC refused."""
    probe = grpc.aio.server(options=SERVER_OPTIONS)
    try:
        probe.add_insecure_port(address)
    except RuntimeError:
        return False
    finally:
        await probe.stop(None)
    return True


async def start_server(authority: Authority, address: str | None = None) -> RunningServer:
    """Build, bind and start the server; `address` defaults to settings.grpc_address."""
    settings = authority.settings
    credentials = _credentials(settings)
    metrics = Metrics(authority)
    interceptor = CallerAuthInterceptor(
        method_policies(allow_anonymous_verify=settings.allow_anonymous_verify),
        _caller_from_bearer(authority),
        _caller_from_certificate(authority) if settings.tls_client_ca_file else None,
        on_refusal=lambda method, error: metrics.refused(
            method.rsplit("/", 1)[-1], status_for(error).name
        ),
    )
    server = grpc.aio.server(
        interceptors=[interceptor],
        options=SERVER_OPTIONS,
    )
    authsvc_pb2_grpc.add_TokenServiceServicer_to_server(TokenService(authority, metrics), server)
    authsvc_pb2_grpc.add_AuthorizationServiceServicer_to_server(
        AuthorizationService(authority, metrics), server
    )
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bind = address or settings.grpc_address
    try:
        if credentials is None:
            port = server.add_insecure_port(bind)
        else:
            port = server.add_secure_port(bind, credentials)
    except RuntimeError as exc:  # grpc's only word for "cannot bind", and for TLS it cannot use
        await server.stop(None)
        if credentials is not None and await _binds_without_tls(bind):
            raise ConfigError(
                f"AUTHSVC_TLS_CERT_FILE={settings.tls_cert_file}, AUTHSVC_TLS_KEY_FILE="
                f"{settings.tls_key_file}: gRPC cannot use this certificate and key (it takes "
                "RSA, ECDSA on P-256, P-384 or P-521, and Ed25519)"
            ) from exc
        raise ConfigError(
            f"AUTHSVC_GRPC_ADDRESS={bind}: cannot listen there (in use?); each replica on one "
            "machine needs its own port"
        ) from exc
    await server.start()
    listener = _health_listener(health_servicer)
    authority.health.listeners.append(listener)  # before the first status: no change missed
    await listener(authority.health.verdict)
    return RunningServer(server, port, health_servicer, metrics, authority.health)


async def stop_server(
    running: RunningServer, grace: float, *, end_streams: Callable[[], None] | None = None
) -> None:
    """Graceful stop. Health goes NOT_SERVING first, for good, so load balancers drain this
    replica; then grpc refuses new calls and gives those in flight `grace` seconds before
    cancelling them. `end_streams` (`Authority.end_subscriptions`, in `authsvc serve`) ends the
    streams that never finish on their own, which would otherwise hold the stop for the whole
    grace and then be cut: their clients resume on another replica."""
    await running.database_health.begin_shutdown()  # no verdict after this one is SERVING
    await running.health.enter_graceful_shutdown()  # and grpc ignores any status set later
    if end_streams is not None:
        # This only queues each stream's end; the streams finish once this task waits in
        # stop(), whose first step has refused new calls, so no client reconnects here (and
        # one that got in before is ended at once all the same).
        end_streams()
    await running.server.stop(grace)
