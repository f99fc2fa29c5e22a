"""`authsvc serve`'s configuration of the gateway it embeds."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from authsvc_gateway.csrf import CsrfVerdict, check_csrf, issue_csrf

from authsvc.keys.sealing import new_kek_text
from authsvc.serve import _banner, dev_issuer, embedded_session_key, gateway_config
from authsvc.testing import throwaway_settings


@pytest.fixture(autouse=True)
def gateway_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSVC_GATEWAY_CLIENT_ID", "gw")
    monkeypatch.setenv("AUTHSVC_GATEWAY_CLIENT_SECRET", "asc_secret")
    monkeypatch.delenv("AUTHSVC_GATEWAY_SESSION_KEY", raising=False)


def _embedded(data_dir: Path, kek: str) -> tuple[bytes, bool]:
    settings = throwaway_settings(data_dir, kek=kek)
    config = gateway_config(settings, session_key=embedded_session_key(settings))
    return config.session_key, config.session_key_shared


def test_replicas_with_one_kek_sign_login_forms_alike(tmp_path: Path) -> None:
    kek = new_kek_text()
    (key_a, shared), (key_b, _) = _embedded(tmp_path / "a", kek), _embedded(tmp_path / "b", kek)
    assert shared
    assert key_a == key_b
    # A login form served by one replica is accepted when posted to the other.
    pair = issue_csrf(key_a, None)
    assert check_csrf(key_b, pair.cookie, pair.token) is CsrfVerdict.PASSED


def test_another_kek_gives_another_session_key(tmp_path: Path) -> None:
    key_a, _ = _embedded(tmp_path / "a", new_kek_text())
    key_b, _ = _embedded(tmp_path / "b", new_kek_text())
    assert key_a != key_b


def test_a_configured_session_key_wins_over_the_derived_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AUTHSVC_GATEWAY_SESSION_KEY", base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")
    )
    assert _embedded(tmp_path, new_kek_text()) == (b"k" * 32, True)


def test_a_standalone_gateway_without_a_session_key_makes_up_its_own(tmp_path: Path) -> None:
    config = gateway_config(throwaway_settings(tmp_path))
    assert not config.session_key_shared
    assert len(config.session_key) == 32


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "[::1]"])
def test_the_banner_names_the_address_grpc_listens_on(tmp_path: Path, host: str) -> None:
    settings = throwaway_settings(tmp_path, grpc_address=f"{host}:0")
    assert f"serving gRPC on {host}:50051 " in _banner(settings, 50051, None, None)


@pytest.mark.parametrize("dev", [True, False])
def test_only_dev_mode_sends_the_reader_to_the_demo(tmp_path: Path, dev: bool) -> None:
    # `authsvc demo` needs the dev clients: outside dev it fails, so the banner must not say it.
    settings = throwaway_settings(tmp_path, dev=dev)
    banner = _banner(settings, 50051, None, None)
    assert ("authsvc demo" in banner) is dev
    # Outside dev mode there are no clients yet: the next step is to register one.
    assert ("authsvc clients create" in banner) is not dev
    assert "Next:" in banner


@pytest.mark.parametrize(
    ("address", "environ", "issuer"),
    [
        pytest.param("127.0.0.1:51275", {}, "http://127.0.0.1:51275", id="gateway-moved"),
        pytest.param("0.0.0.0:8081", {}, "http://127.0.0.1:8081", id="all-interfaces"),
        pytest.param("[::1]:8081", {}, "http://[::1]:8081", id="ipv6-loopback"),
        pytest.param(
            "127.0.0.1:51275",
            {"AUTHSVC_ISSUER": "http://localhost:9000"},
            "http://localhost:9000",
            id="issuer-set",
        ),
        pytest.param("127.0.0.1:0", {}, "http://127.0.0.1:8080", id="port-chosen-at-bind"),
        pytest.param("10.1.2.3:8080", {}, "http://127.0.0.1:8080", id="not-loopback"),
    ],
)
def test_dev_mode_names_the_gateway_it_serves_as_the_issuer(
    tmp_path: Path, address: str, environ: dict[str, str], issuer: str
) -> None:
    """With only AUTHSVC_GATEWAY_ADDRESS moved, the metadata served from the new port named the
    default issuer on 8080, which RFC 8414 §3.3 clients refuse."""
    settings = throwaway_settings(
        tmp_path,
        dev=True,
        gateway_address=address,
        issuer=environ.get("AUTHSVC_ISSUER", "") or "http://127.0.0.1:8080",
    )
    assert dev_issuer(settings, environ).issuer == issuer
    if not environ and issuer != "http://127.0.0.1:8080":
        # ... and the embedded gateway's public URL is that issuer: no warning, and the
        # metadata's endpoints are under it.
        gateway = gateway_config(dev_issuer(settings, environ), session_key=b"k" * 32)
        assert gateway.public_url == issuer


def test_outside_dev_mode_the_issuer_is_left_as_configured(tmp_path: Path) -> None:
    settings = throwaway_settings(tmp_path, gateway_address="127.0.0.1:51275")
    assert dev_issuer(settings, {}).issuer == settings.issuer
