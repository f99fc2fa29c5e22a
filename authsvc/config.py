"""Configuration from `AUTHSVC_*` environment variables, validated once at start.

A bad value stops the service with a `ConfigError` that names the variable, what was wrong and how to
fix it. Nothing else in the package reads the environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from authsvc_client import PINNED_ALGORITHMS
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# The algorithms verifiers accept (never `none`, never HMAC): authsvc signs with no other.
SIGNING_ALGORITHMS = tuple(sorted(PINNED_ALGORITHMS))
#: Each key's recent failures are one row; this bounds its size.
MAX_LOGIN_FAILURES = 1000
#: How long after a sign-in it may still yield an authorization code: the life of the gateway's
#: consent page (`authsvc_gateway.consent.CONSENT_TICKET_LIFETIME` is this).
SIGN_IN_LIFETIME = 600


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message says how to fix it."""


@dataclass(frozen=True)
class Settings:
    """Everything the service can be told. Durations are seconds."""

    data_dir: Path = Path("var")
    database_url: str = field(default="", repr=False)  # may carry a password
    issuer: str = "http://127.0.0.1:8080"
    audience: str = "authsvc"
    grpc_address: str = "127.0.0.1:50051"
    gateway_address: str = "127.0.0.1:8080"
    metrics_address: str = "127.0.0.1:9464"  # empty disables /metrics
    gateway_embedded: bool = False  # serve the HTTP gateway in this process (on in dev)
    access_token_ttl: int = 600
    refresh_idle_ttl: int = 14 * 86400
    refresh_absolute_ttl: int = 30 * 86400
    refresh_grace_seconds: int = 0
    authorization_code_ttl: int = 60
    leeway: int = 30
    signing_algorithm: str = "EdDSA"
    key_rotation_interval: int = 7 * 86400
    jwks_max_age: int = 300
    kek: str = field(default="", repr=False)
    kek_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    allow_anonymous_verify: bool = False
    maintenance_interval: int = 60
    revocation_poll_interval: float = 1.0
    heartbeat_interval: float = 5.0
    shutdown_grace: float = 10.0
    shutdown_drain: float = 0.0  # seconds still serving after health turns NOT_SERVING
    db_pool_size: int = 10
    db_statement_timeout_ms: int = 5000
    db_pool_recycle: int = 1800
    db_connect_timeout: float = 5.0
    health_probe_interval: float = 5.0  # 0: health reports the process only
    health_probe_timeout: float = 2.0
    # Failed logins allowed per window, per account and per client IP, across every replica.
    login_max_failures_account: int = 5
    login_max_failures_ip: int = 20
    login_failure_window: int = 900
    log_level: str = "INFO"
    sched_batch: bool = False  # serve and gateway under Linux's SCHED_BATCH (authsvc/scheduling.py)
    dev: bool = False

    def __post_init__(self) -> None:
        if not self.database_url:
            url = f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'authsvc.db'}"
            object.__setattr__(self, "database_url", url)
        _validate(self)

    @property
    def longest_access_token_life(self) -> int:
        """How long after signing a token may still verify: what a retired key must outlive."""
        return self.access_token_ttl + self.leeway

    @property
    def subject_revocation_memory(self) -> int:
        """How long a subject's or a client's revocation is remembered: as long as an access
        token issued before it may verify, or a sign-in made before it may still ask for a code
        (`sign_in_refusal`), whichever is longer."""
        return max(self.longest_access_token_life, SIGN_IN_LIFETIME + self.leeway)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `AUTHSVC_<FIELD>` for every field; keyword overrides win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f"AUTHSVC_{f.name.upper()}"
            if name in env and (env[name] != "" or f.name in _EMPTY_MEANS_OFF):
                values[f.name] = _parse(name, env[name], _PARSERS[f.name])
        values.update(overrides)
        return cls(**values)


#: `AUTHSVC_*` variables that other parts of the project read, not `Settings`: the HTTP gateway
#: (gateway/authsvc_gateway/config.py; a test keeps the two lists together) and the example
#: services. With the test and bench suites' own prefixes, never reported as unknown.
OTHER_VARIABLES = frozenset(
    {
        "AUTHSVC_ADDRESS",
        "AUTHSVC_CORS_ORIGINS",
        "AUTHSVC_FIRST_PARTY_SKIP_CONSENT",
        "AUTHSVC_GATEWAY_CLIENT_ID",
        "AUTHSVC_GATEWAY_CLIENT_SECRET",
        "AUTHSVC_GATEWAY_PUBLIC_URL",
        "AUTHSVC_GATEWAY_SESSION_KEY",
        "AUTHSVC_GATEWAY_TRUSTED_PROXIES",
        "AUTHSVC_GATEWAY_UPSTREAM",
        "AUTHSVC_GATEWAY_UPSTREAM_CA_FILE",
        "AUTHSVC_GATEWAY_UPSTREAM_CERT_FILE",
        "AUTHSVC_GATEWAY_UPSTREAM_KEY_FILE",
        "AUTHSVC_GATEWAY_UPSTREAM_PLAINTEXT",
    }
)
_OTHER_PREFIXES = ("AUTHSVC_TEST_", "AUTHSVC_BENCH_")


def make_directory(path: Path, variable: str) -> None:
    """Create `path` and its parents if missing; a ConfigError naming `variable` when it cannot
    be created or is not a directory (a file of that name, no permission, a read-only disk)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "exists and is not a directory" if path.exists() else f"cannot be created ({exc})"
        raise ConfigError(f"{variable}={path}: {why}") from None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per `AUTHSVC_*` variable that nothing reads, with the name it most likely meant.

    Such a variable is almost always a typo, and a typo is silent: `AUTHSVC_DATABSE_URL` leaves a
    replica on a private SQLite database of its own. It is reported, not refused, because a
    deployment may set variables of its own under the same prefix.
    """
    env = os.environ if environ is None else environ
    known = {f"AUTHSVC_{f.name.upper()}" for f in dataclasses.fields(Settings)} | OTHER_VARIABLES
    lines = []
    for name in sorted(env):
        if not name.startswith("AUTHSVC_") or name in known or name.startswith(_OTHER_PREFIXES):
            continue
        guess = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        hint = f"; did you mean {guess[0]}?" if guess else ""
        lines.append(f"{name} is not a setting of authsvc and is ignored{hint}")
    return lines


def warn_unknown_variables() -> None:
    """Log a warning per line of `unknown_variables`: at the start of every program that reads
    the `AUTHSVC_*` variables, once logging is configured."""
    for line in unknown_variables():
        logging.getLogger(__name__).warning(line)


def _parse(name: str, raw: str, parser: Callable[[str], Any]) -> Any:
    try:
        return parser(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from None


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("use true or false")


def _seconds(raw: str) -> int:
    """Whole seconds, or a number with a unit: 90, 90s, 10m, 12h, 7d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = raw.strip().lower()
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    if not number.isdigit():
        raise ValueError("use whole seconds or a number with s, m, h or d (for example 10m)")
    return int(number) * factor


def _number(raw: str) -> float:
    return float(raw)


# An empty variable normally means "unset"; for these it means "off" (the README says so).
_EMPTY_MEANS_OFF = {"metrics_address"}
_PATH_FIELDS = {"data_dir", "kek_file", "tls_cert_file", "tls_key_file", "tls_client_ca_file"}
_INT_FIELDS = {
    "db_pool_size",
    "db_statement_timeout_ms",
    "login_max_failures_account",
    "login_max_failures_ip",
}
_FLOAT_FIELDS = {
    "revocation_poll_interval",
    "heartbeat_interval",
    "shutdown_grace",
    "shutdown_drain",
    "db_connect_timeout",
    "health_probe_interval",
    "health_probe_timeout",
}
_BOOL_FIELDS = {"allow_anonymous_verify", "dev", "gateway_embedded", "sched_batch"}


def _parser_for(name: str, default: Any) -> Callable[[str], Any]:
    if name in _PATH_FIELDS:
        return Path
    if name in _BOOL_FIELDS:
        return _boolean
    if name in _FLOAT_FIELDS:
        return _number
    if name in _INT_FIELDS:
        return int
    if isinstance(default, int):
        return _seconds
    return str


_PARSERS = {f.name: _parser_for(f.name, f.default) for f in dataclasses.fields(Settings)}


def _require(condition: bool, variable: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"AUTHSVC_{variable}: {message}")


def _validate(s: Settings) -> None:
    scheme = s.database_url.split(":", 1)[0]
    _require(
        scheme in {"sqlite+aiosqlite", "postgresql+asyncpg"},
        "DATABASE_URL",
        "use sqlite+aiosqlite:///path/to/authsvc.db or postgresql+asyncpg://user@host/db",
    )
    try:
        database = make_url(s.database_url)
    except (ArgumentError, ValueError):
        # Not the parser's words: they may quote the URL, password and all.
        raise ConfigError(
            "AUTHSVC_DATABASE_URL: cannot be parsed; the port must be a number, and a user or "
            "password with @, : or / in it must be percent-encoded"
        ) from None
    _require(
        "sslmode" not in database.query,
        "DATABASE_URL",
        "sslmode is libpq's parameter; asyncpg takes ssl=require (or ssl=verify-full)",
    )
    issuer = urlsplit(s.issuer)
    _require(
        issuer.scheme in {"https", "http"} and bool(issuer.netloc),
        "ISSUER",
        "must be an absolute URL such as https://auth.example.com (RFC 8414 §2)",
    )
    _require(
        issuer.scheme == "https" or issuer.hostname in {"127.0.0.1", "localhost", "::1"},
        "ISSUER",
        "must use https unless it names a loopback host (RFC 8414 §2)",
    )
    _require(not issuer.query and not issuer.fragment, "ISSUER", "must have no query or fragment")
    addresses = ["grpc_address", "gateway_address"] + (
        ["metrics_address"] if s.metrics_address else []
    )
    for name in addresses:
        host, _, port = getattr(s, name).rpartition(":")
        _require(
            bool(host) and port.isdigit() and int(port) <= 65535,
            name.upper(),
            "use host:port with a port up to 65535, for example 127.0.0.1:50051 (port 0 picks "
            "a free one)",
        )
    _require(bool(s.audience.strip()), "AUDIENCE", "must not be empty")
    _require(60 <= s.access_token_ttl <= 86400, "ACCESS_TOKEN_TTL", "keep it between 60s and 1d")
    _require(
        s.access_token_ttl <= s.refresh_idle_ttl <= s.refresh_absolute_ttl,
        "REFRESH_IDLE_TTL",
        "needs ACCESS_TOKEN_TTL <= REFRESH_IDLE_TTL <= REFRESH_ABSOLUTE_TTL",
    )
    _require(0 <= s.refresh_grace_seconds <= 60, "REFRESH_GRACE_SECONDS", "keep it within 0..60s")
    _require(
        1 <= s.authorization_code_ttl <= 60,
        "AUTHORIZATION_CODE_TTL",
        "codes live at most 60s (OAuth 2.1 §4.1.2)",
    )
    _require(0 <= s.leeway <= 300, "LEEWAY", "keep clock leeway within 0..300s")
    _require(
        s.signing_algorithm in SIGNING_ALGORITHMS,
        "SIGNING_ALGORITHM",
        f"use one of {', '.join(SIGNING_ALGORITHMS)}",
    )
    _require(
        s.key_rotation_interval >= 2 * s.jwks_max_age + s.longest_access_token_life,
        "KEY_ROTATION_INTERVAL",
        "must leave room to publish a key one JWKS cache lifetime before it signs",
    )
    _require(30 <= s.jwks_max_age <= 86400, "JWKS_MAX_AGE", "keep it between 30s and 1d")
    tls = (s.tls_cert_file, s.tls_key_file)
    _require(
        all(tls) or not any(tls),
        "TLS_CERT_FILE",
        "set both AUTHSVC_TLS_CERT_FILE and AUTHSVC_TLS_KEY_FILE, or neither",
    )
    _require(
        s.tls_client_ca_file is None or all(tls),
        "TLS_CLIENT_CA_FILE",
        "mutual TLS needs the server's own AUTHSVC_TLS_CERT_FILE and AUTHSVC_TLS_KEY_FILE",
    )
    _require(s.db_pool_size >= 1, "DB_POOL_SIZE", "must be at least 1")
    _require(
        s.db_statement_timeout_ms >= 0,
        "DB_STATEMENT_TIMEOUT_MS",
        "use milliseconds, 0 for no limit (5000 is the default)",
    )
    _require(s.db_connect_timeout > 0, "DB_CONNECT_TIMEOUT", "use seconds, more than 0")
    _require(
        s.health_probe_interval >= 0,
        "HEALTH_PROBE_INTERVAL",
        "use seconds between database probes (5 is the default), or 0 for health that reports "
        "the process only",
    )
    probing = s.health_probe_interval > 0
    _require(
        s.health_probe_timeout > 0
        and (not probing or s.health_probe_timeout <= s.health_probe_interval),
        "HEALTH_PROBE_TIMEOUT",
        "use seconds, more than 0 and at most AUTHSVC_HEALTH_PROBE_INTERVAL (2 is the default)",
    )
    _require(
        s.maintenance_interval >= 1,
        "MAINTENANCE_INTERVAL",
        "use seconds, at least 1 (60 is the default); each run reads the database",
    )
    _require(
        s.revocation_poll_interval > 0,
        "REVOCATION_POLL_INTERVAL",
        "use seconds, more than 0 (1 is the default); each poll reads the database",
    )
    _require(
        0 < s.heartbeat_interval <= 30,
        "HEARTBEAT_INTERVAL",
        "use seconds within 0..30 (5 is the default): a verifier that hears nothing for its "
        "staleness bound (60 s by default) refuses calls",
    )
    for kind in ("account", "ip"):
        _require(
            1 <= getattr(s, f"login_max_failures_{kind}") <= MAX_LOGIN_FAILURES,
            f"LOGIN_MAX_FAILURES_{kind.upper()}",
            f"use a whole number of failed logins within 1..{MAX_LOGIN_FAILURES} "
            f"(the default is {'5' if kind == 'account' else '20'})",
        )
    _require(
        1 <= s.login_failure_window <= 86400,
        "LOGIN_FAILURE_WINDOW",
        "use seconds within 1s..1d, for example 900 or 15m (the default)",
    )
    _require(s.shutdown_grace >= 0, "SHUTDOWN_GRACE", "must not be negative")
    _require(s.shutdown_drain >= 0, "SHUTDOWN_DRAIN", "must not be negative")
    _require(
        s.log_level.upper() in {"DEBUG", "INFO", "WARNING", "ERROR"},
        "LOG_LEVEL",
        "use DEBUG, INFO, WARNING or ERROR",
    )
