"""The gateway's settings, read from `AUTHSVC_*` environment variables.

Every setting has a default that works for `make run` on one machine; production deployments set at
least the issuer, the public URL, the gateway's own client credentials and a session key shared by
every gateway replica.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# The same defaults as authsvc's own settings (a test keeps them equal), so that one set of
# AUTHSVC_* variables configures both processes.
DEFAULT_ISSUER = "http://127.0.0.1:8080"
DEFAULT_ADDRESS = "127.0.0.1:8080"
DEFAULT_UPSTREAM = "127.0.0.1:50051"
DEFAULT_AUDIENCE = "authsvc"

#: The scopes the gateway's own client must be registered with, and no more: it authenticates
#: clients and users and mints codes (gateway), trades refresh tokens (issue), answers RFC 7662
#: (introspect) and RFC 7009 (revoke).
GATEWAY_SCOPES = ("authsvc:gateway", "authsvc:issue", "authsvc:introspect", "authsvc:revoke")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway needs to run; build it with `from_env()` or directly in tests."""

    #: The gateway's own OAuth client at authsvc, registered with GATEWAY_SCOPES.
    client_id: str
    client_secret: str = field(repr=False)
    #: RFC 8414 `issuer`: must equal authsvc's own issuer (the `iss` of its tokens) exactly.
    issuer: str = DEFAULT_ISSUER
    #: The gRPC target of authsvc, e.g. "127.0.0.1:50051".
    upstream: str = DEFAULT_UPSTREAM
    #: Where the gateway listens.
    host: str = "127.0.0.1"
    port: int = 8080
    #: The URL external clients use to reach the gateway; endpoints are advertised under it.
    public_url: str = "http://127.0.0.1:8080"
    #: The audience authsvc expects on the gateway's bearer token.
    audience: str = DEFAULT_AUDIENCE
    #: Browser origins allowed to call the token, revoke, JWKS and metadata endpoints.
    cors_origins: tuple[str, ...] = ()
    #: First-party clients skip the consent page when this is on.
    first_party_skip_consent: bool = True
    #: Signs the CSRF tokens and consent tickets; every gateway replica must share it.
    session_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    #: Whether `session_key` was given (AUTHSVC_GATEWAY_SESSION_KEY, or derived from the KEK when
    #: embedded in `authsvc serve`) rather than made up by this process at start.
    session_key_shared: bool = False
    #: IPs of reverse proxies whose X-Forwarded-For is believed; empty trusts none.
    trusted_proxies: tuple[str, ...] = ()
    #: Seconds before a call to authsvc is abandoned.
    upstream_timeout: float = 10.0
    #: TLS to authsvc: the CA that signed its certificate (TLS is off without it), and for mutual
    #: TLS the gateway's own certificate and key (the certificate's CN is the gateway's client id).
    upstream_ca_file: Path | None = None
    upstream_cert_file: Path | None = None
    upstream_key_file: Path | None = None
    #: Plaintext to an `upstream` that is not on this machine (behind a service mesh that
    #: encrypts the hop); without it such an upstream needs `upstream_ca_file`
    #: (`backend.channel_credentials`).
    upstream_plaintext: bool = False
    #: Seconds the standalone gateway goes on serving after the first SIGTERM, with `/readyz`
    #: answering 503, so that a load balancer stops sending it requests before it closes.
    shutdown_drain: float = 0.0

    def __post_init__(self) -> None:
        pair = (self.upstream_cert_file, self.upstream_key_file)
        if any(pair) and not all(pair):
            raise ConfigError(
                "set both AUTHSVC_GATEWAY_UPSTREAM_CERT_FILE and AUTHSVC_GATEWAY_UPSTREAM_KEY_FILE"
            )
        if any(pair) and self.upstream_ca_file is None:
            raise ConfigError("a client certificate needs AUTHSVC_GATEWAY_UPSTREAM_CA_FILE too")

    def endpoint(self, path: str) -> str:
        """The public URL of one of the gateway's paths."""
        return self.public_url.rstrip("/") + path

    def browser_path(self, path: str) -> str:
        """Where a browser finds one of the gateway's paths on its host: under the public URL's
        own path, for a gateway behind a proxy that serves it under a prefix (and strips it)."""
        return urlsplit(self.public_url).path.rstrip("/") + path

    @property
    def secure_cookies(self) -> bool:
        """Cookies carry `Secure` when clients reach the gateway over HTTPS."""
        return urlsplit(self.public_url).scheme == "https"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        """Read the settings from `AUTHSVC_*` variables (see gateway/README.md)."""
        env = os.environ if env is None else env
        host, port = _address(env.get("AUTHSVC_GATEWAY_ADDRESS", DEFAULT_ADDRESS))
        public_url = env.get("AUTHSVC_GATEWAY_PUBLIC_URL") or f"http://{host}:{port}"
        client_id = env.get("AUTHSVC_GATEWAY_CLIENT_ID", "")
        client_secret = env.get("AUTHSVC_GATEWAY_CLIENT_SECRET", "")
        if not client_id or not client_secret:
            raise ConfigError(
                "AUTHSVC_GATEWAY_CLIENT_ID and AUTHSVC_GATEWAY_CLIENT_SECRET must name the "
                "gateway's own client (see gateway/README.md)"
            )
        session_key = env.get("AUTHSVC_GATEWAY_SESSION_KEY")
        return cls(
            issuer=env.get("AUTHSVC_ISSUER") or DEFAULT_ISSUER,
            upstream=(
                env.get("AUTHSVC_GATEWAY_UPSTREAM")
                or env.get("AUTHSVC_GRPC_ADDRESS")
                or DEFAULT_UPSTREAM
            ),
            client_id=client_id,
            client_secret=client_secret,
            host=host,
            port=port,
            public_url=public_url,
            audience=env.get("AUTHSVC_AUDIENCE") or DEFAULT_AUDIENCE,
            cors_origins=_words(env.get("AUTHSVC_CORS_ORIGINS", "")),
            first_party_skip_consent=_flag(env, "AUTHSVC_FIRST_PARTY_SKIP_CONSENT", default=True),
            session_key=_key(session_key) if session_key else secrets.token_bytes(32),
            session_key_shared=bool(session_key),
            trusted_proxies=_words(env.get("AUTHSVC_GATEWAY_TRUSTED_PROXIES", "")),
            upstream_ca_file=_path(env, "AUTHSVC_GATEWAY_UPSTREAM_CA_FILE"),
            upstream_cert_file=_path(env, "AUTHSVC_GATEWAY_UPSTREAM_CERT_FILE"),
            upstream_key_file=_path(env, "AUTHSVC_GATEWAY_UPSTREAM_KEY_FILE"),
            upstream_plaintext=_flag(env, "AUTHSVC_GATEWAY_UPSTREAM_PLAINTEXT", default=False),
            shutdown_drain=_seconds(env, "AUTHSVC_SHUTDOWN_DRAIN"),
        )


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"AUTHSVC_GATEWAY_ADDRESS must be host:port, not {value!r}")
    return host.strip("[]"), int(port)


def _words(value: str) -> tuple[str, ...]:
    return tuple(word for word in value.replace(",", " ").split() if word)


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def _seconds(env: Mapping[str, str], name: str) -> float:
    value = env.get(name, "").strip()
    try:
        seconds = float(value) if value else 0.0
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # NaN fails this too; inf is "until the second signal", as for authsvc
        raise ConfigError(f"{name} must be a number of seconds, 0 or more, not {value!r}")
    return seconds


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "").strip()
    return Path(value) if value else None


def _key(value: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(
            "AUTHSVC_GATEWAY_SESSION_KEY must be base64url (`authsvc kek` prints one)"
        ) from exc
    if len(key) < 32:
        raise ConfigError(
            "AUTHSVC_GATEWAY_SESSION_KEY must hold at least 32 bytes (`authsvc kek` prints one)"
        )
    return key
