"""Gateway settings from AUTHSVC_* variables, and their agreement with authsvc's own defaults."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from authsvc_gateway.config import ConfigError, GatewayConfig

from authsvc.config import Settings

ENV = {"AUTHSVC_GATEWAY_CLIENT_ID": "gw", "AUTHSVC_GATEWAY_CLIENT_SECRET": "asc_secret"}


def test_the_defaults_match_authsvc() -> None:
    core = Settings()
    mine = GatewayConfig.from_env(ENV)
    assert mine.issuer == core.issuer
    assert mine.upstream == core.grpc_address
    assert mine.audience == core.audience
    assert f"{mine.host}:{mine.port}" == core.gateway_address
    assert mine.public_url == "http://127.0.0.1:8080"


def test_every_setting_is_read() -> None:
    key = base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")
    config = GatewayConfig.from_env(
        {
            **ENV,
            "AUTHSVC_ISSUER": "https://auth.example.com",
            "AUTHSVC_GATEWAY_ADDRESS": "10.1.2.3:9000",
            "AUTHSVC_GATEWAY_PUBLIC_URL": "https://auth.example.com",
            "AUTHSVC_GRPC_ADDRESS": "10.0.0.1:50051",
            "AUTHSVC_CORS_ORIGINS": "https://a.example, https://b.example",
            "AUTHSVC_FIRST_PARTY_SKIP_CONSENT": "false",
            "AUTHSVC_GATEWAY_SESSION_KEY": key,
            "AUTHSVC_GATEWAY_TRUSTED_PROXIES": "10.0.0.2",
            "AUTHSVC_GATEWAY_UPSTREAM_PLAINTEXT": "true",
        }
    )
    assert (config.host, config.port) == ("10.1.2.3", 9000)
    assert config.upstream == "10.0.0.1:50051"
    assert config.cors_origins == ("https://a.example", "https://b.example")
    assert config.first_party_skip_consent is False
    assert config.session_key == b"k" * 32
    assert config.trusted_proxies == ("10.0.0.2",)
    assert config.upstream_plaintext is True
    assert config.secure_cookies is True
    assert config.endpoint("/oauth/token") == "https://auth.example.com/oauth/token"


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        pytest.param(
            {"AUTHSVC_GATEWAY_CLIENT_SECRET": ""}, "AUTHSVC_GATEWAY_CLIENT_ID", id="no-secret"
        ),
        pytest.param({"AUTHSVC_GATEWAY_ADDRESS": "8080"}, "AUTHSVC_GATEWAY_ADDRESS", id="address"),
        pytest.param({"AUTHSVC_FIRST_PARTY_SKIP_CONSENT": "maybe"}, "SKIP_CONSENT", id="flag"),
        pytest.param(
            {"AUTHSVC_GATEWAY_UPSTREAM_PLAINTEXT": "sure"}, "UPSTREAM_PLAINTEXT", id="plaintext"
        ),
        pytest.param({"AUTHSVC_GATEWAY_SESSION_KEY": "c2hvcnQ"}, "SESSION_KEY", id="short-key"),
    ],
)
def test_bad_values_name_their_variable(changes: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        GatewayConfig.from_env({**ENV, **changes})


@pytest.mark.parametrize("key", ["c2hvcnQ", "not base64!"], ids=["short", "not-base64"])
def test_a_bad_session_key_says_how_to_make_a_good_one(key: str) -> None:
    with pytest.raises(ConfigError, match="`authsvc kek` prints one"):
        GatewayConfig.from_env({**ENV, "AUTHSVC_GATEWAY_SESSION_KEY": key})


def test_secrets_stay_out_of_repr() -> None:
    config = GatewayConfig.from_env(ENV)
    assert "asc_secret" not in repr(config)
    assert repr(config.session_key) not in repr(config)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({"AUTHSVC_GATEWAY_CLIENT_ID": ""}, "AUTHSVC_GATEWAY_CLIENT_ID", id="client"),
        pytest.param({"AUTHSVC_LOG_LEVEL": "LOUD"}, "AUTHSVC_LOG_LEVEL", id="log-level"),
    ],
)
def test_the_module_entry_point_explains_a_bad_setting(env: dict[str, str], variable: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "authsvc_gateway"],
        env={"PATH": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert variable in done.stderr
