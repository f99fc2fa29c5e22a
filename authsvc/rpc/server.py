"""The grpc.aio server: authsvc.v1 services, standard health, reflection, caller authorization.

`start_server` binds (port 0 picks a free port, as tests do) and returns the running server with
its port. Health (grpc.health.v1, the same status for "" and each authsvc service) follows the
authority's `DatabaseHealth`: NOT_SERVING while the database does not answer. `stop_server` is
the graceful stop: health turns NOT_SERVING for good, new calls are refused, and calls in flight
get `grace` seconds to finish before they are cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from authsvc_client.v1 import authsvc_pb2, authsvc_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authsvc.authority import Authority
from authsvc.config import ConfigError, Settings
from authsvc.errors import AuthError
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

    def authenticate(token: str) -> Caller:
        claims = authority.verify(token, audience=authority.settings.audience)
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


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


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
    except RuntimeError as exc:  # grpc's only word for "cannot bind"
        await server.stop(None)
        raise ConfigError(
            f"AUTHSVC_GRPC_ADDRESS={bind}: cannot listen there (in use?); each replica on one "
            "machine needs its own port"
        ) from exc
    await server.start()
    listener = _health_listener(health_servicer)
    authority.health.listeners.append(listener)  # before the first status: no change missed
    await listener(authority.health.verdict)
    return RunningServer(server, port, health_servicer, metrics, authority.health)


async def stop_server(running: RunningServer, grace: float) -> None:
    """Graceful stop. Health goes NOT_SERVING first, for good, so load balancers drain this
    replica; then grpc refuses new calls and gives those in flight `grace` seconds before
    cancelling them."""
    await running.database_health.begin_shutdown()  # no verdict after this one is SERVING
    await running.health.enter_graceful_shutdown()  # and grpc ignores any status set later
    await running.server.stop(grace)
