"""Settings: parsing AUTHSVC_* variables, and a ConfigError naming the variable for each bad value."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from authsvc.config import OTHER_VARIABLES, ConfigError, Settings, unknown_variables


def test_defaults_are_valid() -> None:
    settings = Settings()
    assert settings.access_token_ttl == 600
    assert settings.refresh_grace_seconds == 0  # the grace window is off by default
    assert settings.signing_algorithm == "EdDSA"
    assert settings.database_url.startswith("sqlite+aiosqlite:///")


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        pytest.param(
            {"database_url": "mysql://db/authsvc"}, "AUTHSVC_DATABASE_URL", id="db-scheme"
        ),
        # The driver would have raised in the middle of the start, with a traceback.
        pytest.param(
            {"database_url": "postgresql+asyncpg://app:pw@127.0.0.1:543x/authsvc"},
            "AUTHSVC_DATABASE_URL",
            id="db-port-not-a-number",
        ),
        pytest.param(
            {"database_url": "postgresql+asyncpg://app:pw@db/authsvc?sslmode=require"},
            "AUTHSVC_DATABASE_URL",
            id="db-libpq-sslmode",
        ),
        pytest.param({"issuer": "auth.example.com"}, "AUTHSVC_ISSUER", id="issuer-not-url"),
        pytest.param({"issuer": "ftp://auth.example.com"}, "AUTHSVC_ISSUER", id="issuer-scheme"),
        pytest.param(
            {"issuer": "http://auth.example.com"}, "AUTHSVC_ISSUER", id="issuer-http-remote"
        ),
        pytest.param({"issuer": "https://a.example/?x=1"}, "AUTHSVC_ISSUER", id="issuer-query"),
        pytest.param({"issuer": "https://a.example/#f"}, "AUTHSVC_ISSUER", id="issuer-fragment"),
        pytest.param({"grpc_address": "50051"}, "AUTHSVC_GRPC_ADDRESS", id="grpc-no-host"),
        pytest.param({"grpc_address": "host:port"}, "AUTHSVC_GRPC_ADDRESS", id="grpc-port-word"),
        # gRPC would bind 99999 mod 65536, and say so nowhere.
        pytest.param(
            {"grpc_address": "127.0.0.1:99999"}, "AUTHSVC_GRPC_ADDRESS", id="grpc-port-too-big"
        ),
        pytest.param(
            {"metrics_address": "127.0.0.1:99999"},
            "AUTHSVC_METRICS_ADDRESS",
            id="metrics-port-too-big",
        ),
        pytest.param({"gateway_address": ":8080"}, "AUTHSVC_GATEWAY_ADDRESS", id="gateway-no-host"),
        pytest.param({"audience": "  "}, "AUTHSVC_AUDIENCE", id="audience-blank"),
        pytest.param({"access_token_ttl": 59}, "AUTHSVC_ACCESS_TOKEN_TTL", id="access-ttl-short"),
        pytest.param({"access_token_ttl": 86401}, "AUTHSVC_ACCESS_TOKEN_TTL", id="access-ttl-long"),
        pytest.param({"refresh_idle_ttl": 300}, "AUTHSVC_REFRESH_IDLE_TTL", id="idle-below-access"),
        pytest.param(
            {"refresh_idle_ttl": 40 * 86400}, "AUTHSVC_REFRESH_IDLE_TTL", id="idle-above-absolute"
        ),
        pytest.param(
            {"refresh_grace_seconds": 61}, "AUTHSVC_REFRESH_GRACE_SECONDS", id="grace-long"
        ),
        pytest.param(
            {"refresh_grace_seconds": -1}, "AUTHSVC_REFRESH_GRACE_SECONDS", id="grace-neg"
        ),
        pytest.param(
            {"authorization_code_ttl": 61}, "AUTHSVC_AUTHORIZATION_CODE_TTL", id="code-ttl"
        ),
        pytest.param(
            {"authorization_code_ttl": 0}, "AUTHSVC_AUTHORIZATION_CODE_TTL", id="code-ttl-0"
        ),
        pytest.param({"leeway": 301}, "AUTHSVC_LEEWAY", id="leeway-long"),
        pytest.param({"leeway": -1}, "AUTHSVC_LEEWAY", id="leeway-negative"),
        pytest.param({"signing_algorithm": "HS256"}, "AUTHSVC_SIGNING_ALGORITHM", id="alg-hmac"),
        pytest.param({"signing_algorithm": "none"}, "AUTHSVC_SIGNING_ALGORITHM", id="alg-none"),
        pytest.param(
            {"key_rotation_interval": 1000},
            "AUTHSVC_KEY_ROTATION_INTERVAL",
            id="rotation-too-often",
        ),
        pytest.param({"jwks_max_age": 29}, "AUTHSVC_JWKS_MAX_AGE", id="jwks-age-short"),
        pytest.param({"jwks_max_age": 86401}, "AUTHSVC_JWKS_MAX_AGE", id="jwks-age-long"),
        pytest.param(
            {"tls_cert_file": Path("c.pem")}, "AUTHSVC_TLS_CERT_FILE", id="tls-cert-alone"
        ),
        pytest.param({"tls_key_file": Path("k.pem")}, "AUTHSVC_TLS_CERT_FILE", id="tls-key-alone"),
        pytest.param(
            {"tls_client_ca_file": Path("ca.pem")}, "AUTHSVC_TLS_CLIENT_CA_FILE", id="mtls-no-cert"
        ),
        pytest.param({"db_pool_size": 0}, "AUTHSVC_DB_POOL_SIZE", id="pool-empty"),
        pytest.param(
            {"maintenance_interval": 0}, "AUTHSVC_MAINTENANCE_INTERVAL", id="maintenance-0"
        ),
        pytest.param(
            {"revocation_poll_interval": 0.0},
            "AUTHSVC_REVOCATION_POLL_INTERVAL",
            id="poll-0",
        ),
        pytest.param(
            {"revocation_poll_interval": -1.0},
            "AUTHSVC_REVOCATION_POLL_INTERVAL",
            id="poll-negative",
        ),
        pytest.param({"heartbeat_interval": 0.0}, "AUTHSVC_HEARTBEAT_INTERVAL", id="heartbeat-0"),
        pytest.param(
            {"heartbeat_interval": 31.0}, "AUTHSVC_HEARTBEAT_INTERVAL", id="heartbeat-beyond-30s"
        ),
        pytest.param({"shutdown_grace": -1.0}, "AUTHSVC_SHUTDOWN_GRACE", id="grace-negative"),
        pytest.param(
            {"health_probe_interval": -1.0},
            "AUTHSVC_HEALTH_PROBE_INTERVAL",
            id="probe-interval-negative",
        ),
        pytest.param(
            {"health_probe_timeout": 0.0}, "AUTHSVC_HEALTH_PROBE_TIMEOUT", id="probe-timeout-0"
        ),
        pytest.param(
            {"health_probe_interval": 1.0, "health_probe_timeout": 1.5},
            "AUTHSVC_HEALTH_PROBE_TIMEOUT",
            id="probe-timeout-beyond-interval",
        ),
        pytest.param({"log_level": "LOUD"}, "AUTHSVC_LOG_LEVEL", id="log-level"),
        pytest.param(
            {"login_max_failures_account": 0},
            "AUTHSVC_LOGIN_MAX_FAILURES_ACCOUNT",
            id="login-account-none",
        ),
        pytest.param(
            {"login_max_failures_ip": 1001}, "AUTHSVC_LOGIN_MAX_FAILURES_IP", id="login-ip-huge"
        ),
        pytest.param(
            {"login_failure_window": 0}, "AUTHSVC_LOGIN_FAILURE_WINDOW", id="login-window-0"
        ),
        pytest.param(
            {"login_failure_window": 86401},
            "AUTHSVC_LOGIN_FAILURE_WINDOW",
            id="login-window-long",
        ),
    ],
)
def test_each_bad_value_names_its_variable(overrides: dict[str, Any], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(**overrides)
    assert str(caught.value).startswith(f"{variable}:")
    assert ":pw@" not in str(caught.value)  # a database URL's password is never shown


@pytest.mark.parametrize(
    ("variable", "raw", "field", "value"),
    [
        pytest.param("AUTHSVC_ACCESS_TOKEN_TTL", "900", "access_token_ttl", 900, id="seconds"),
        pytest.param("AUTHSVC_ACCESS_TOKEN_TTL", "90s", "access_token_ttl", 90, id="seconds-unit"),
        pytest.param("AUTHSVC_ACCESS_TOKEN_TTL", "10m", "access_token_ttl", 600, id="minutes"),
        pytest.param("AUTHSVC_ACCESS_TOKEN_TTL", "1H", "access_token_ttl", 3600, id="hours-upper"),
        pytest.param("AUTHSVC_REFRESH_IDLE_TTL", "7d", "refresh_idle_ttl", 7 * 86400, id="days"),
        pytest.param(
            "AUTHSVC_ALLOW_ANONYMOUS_VERIFY", "yes", "allow_anonymous_verify", True, id="yes"
        ),
        pytest.param("AUTHSVC_DEV", "0", "dev", False, id="bool-0"),
        pytest.param("AUTHSVC_HEARTBEAT_INTERVAL", "0.5", "heartbeat_interval", 0.5, id="float"),
        pytest.param("AUTHSVC_DB_POOL_SIZE", "3", "db_pool_size", 3, id="int"),
        # The gateway's variables of old, read now where the limits are enforced.
        pytest.param(
            "AUTHSVC_LOGIN_MAX_FAILURES_ACCOUNT",
            "3",
            "login_max_failures_account",
            3,
            id="login-account",
        ),
        pytest.param(
            "AUTHSVC_LOGIN_MAX_FAILURES_IP", "50", "login_max_failures_ip", 50, id="login-ip"
        ),
        pytest.param(
            "AUTHSVC_LOGIN_FAILURE_WINDOW", "900", "login_failure_window", 900, id="login-window"
        ),
        pytest.param(
            "AUTHSVC_LOGIN_FAILURE_WINDOW", "15m", "login_failure_window", 900, id="login-window-m"
        ),
        pytest.param(
            "AUTHSVC_HEALTH_PROBE_TIMEOUT", "0.5", "health_probe_timeout", 0.5, id="probe-timeout"
        ),
        pytest.param(
            "AUTHSVC_DATA_DIR", "/srv/authsvc", "data_dir", Path("/srv/authsvc"), id="path"
        ),
        pytest.param(
            "AUTHSVC_ISSUER",
            "https://auth.example.com",
            "issuer",
            "https://auth.example.com",
            id="str",
        ),
    ],
)
def test_from_env_parses(variable: str, raw: str, field: str, value: Any) -> None:
    assert getattr(Settings.from_env({variable: raw}), field) == value


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        pytest.param("AUTHSVC_ACCESS_TOKEN_TTL", "ten", id="seconds-word"),
        pytest.param("AUTHSVC_ACCESS_TOKEN_TTL", "10w", id="seconds-unknown-unit"),
        pytest.param("AUTHSVC_ACCESS_TOKEN_TTL", "-60", id="seconds-negative"),
        pytest.param("AUTHSVC_ACCESS_TOKEN_TTL", "1.5m", id="seconds-fraction"),
        pytest.param("AUTHSVC_DEV", "maybe", id="bool"),
        pytest.param("AUTHSVC_HEARTBEAT_INTERVAL", "soon", id="float"),
        pytest.param("AUTHSVC_DB_POOL_SIZE", "ten", id="int"),
        pytest.param("AUTHSVC_LOGIN_FAILURE_WINDOW", "-1", id="login-window-negative"),
        pytest.param("AUTHSVC_LOGIN_MAX_FAILURES_IP", "many", id="login-ip-word"),
    ],
)
def test_from_env_unparsable_value_names_its_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: raw})
    assert str(caught.value).startswith(f"{variable}=")


def test_from_env_ignores_empty_values_and_other_variables() -> None:
    settings = Settings.from_env({"AUTHSVC_ACCESS_TOKEN_TTL": "", "HOME": "/root", "TTL": "x"})
    assert settings.access_token_ttl == 600


def test_a_mistyped_variable_is_reported_with_the_name_it_meant() -> None:
    env = {"AUTHSVC_DATABSE_URL": "postgresql+asyncpg://db/authsvc", "AUTHSVC_KEK": "k"}
    assert unknown_variables(env) == [
        "AUTHSVC_DATABSE_URL is not a setting of authsvc and is ignored; "
        "did you mean AUTHSVC_DATABASE_URL?"
    ]


def test_an_unknown_variable_without_a_near_name_is_reported_without_a_guess() -> None:
    assert unknown_variables({"AUTHSVC_COLOUR": "blue"}) == [
        "AUTHSVC_COLOUR is not a setting of authsvc and is ignored"
    ]


def test_the_variables_of_every_part_of_the_project_are_known() -> None:
    env = {
        "AUTHSVC_DATABASE_URL": "x",  # a setting
        "AUTHSVC_GATEWAY_UPSTREAM": "x",  # the gateway's
        "AUTHSVC_TEST_POSTGRES_URL": "x",  # the test suite's
        "AUTHSVC_BENCH_POSTGRES_URL": "x",  # the bench's
        "HOME": "/root",
    }
    assert unknown_variables(env) == []


def test_the_gateways_variables_are_all_known() -> None:
    source = (Path(__file__).parents[2] / "gateway/authsvc_gateway/config.py").read_text()
    settings = {f"AUTHSVC_{name.upper()}" for name in Settings.__dataclass_fields__}
    named = set(re.findall(r"AUTHSVC_[A-Z_]*[A-Z]", source))
    assert named - settings - OTHER_VARIABLES == set()


def test_keyword_overrides_win_over_environment() -> None:
    env = {"AUTHSVC_AUDIENCE": "from-env"}
    assert Settings.from_env(env, audience="from-code").audience == "from-code"


def test_loopback_issuer_may_use_http() -> None:
    for host in ("127.0.0.1", "localhost", "[::1]"):
        Settings(issuer=f"http://{host}:8080")


def test_repr_hides_secrets() -> None:
    settings = Settings(
        kek="S3CRET-KEK-TEXT", database_url="postgresql+asyncpg://authsvc:pa55word@db/authsvc"
    )
    assert "S3CRET-KEK-TEXT" not in repr(settings)
    assert "pa55word" not in repr(settings)


def test_an_empty_metrics_address_disables_metrics() -> None:
    # The README's promise: AUTHSVC_METRICS_ADDRESS= (empty) disables /metrics. Other empty
    # variables still mean "unset".
    assert Settings.from_env({"AUTHSVC_METRICS_ADDRESS": ""}).metrics_address == ""
    assert Settings.from_env({}).metrics_address == "127.0.0.1:9464"


def test_a_probe_interval_of_zero_turns_the_database_probe_off() -> None:
    # Health then reports the process only; the timeout, unused, needs no interval to fit in.
    settings = Settings.from_env({"AUTHSVC_HEALTH_PROBE_INTERVAL": "0"})
    assert (settings.health_probe_interval, settings.health_probe_timeout) == (0.0, 2.0)
