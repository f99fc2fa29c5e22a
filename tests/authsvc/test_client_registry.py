"""Client registration: what is refused, how secrets are kept; the dev bootstrap."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authsvc.authority import open_authority
from authsvc.config import ConfigError
from authsvc.errors import InvalidRequest, NotFound
from authsvc.serve import DEV_CREDENTIALS, bootstrap_dev, read_dev_credentials
from authsvc.testing import RunningAuthority, throwaway_settings
from authsvc.tokens import opaque
from tests.authsvc.calls import database_rows


@pytest.mark.parametrize(
    ("registration", "message"),
    [
        pytest.param({"grant_types": []}, "grant types must be among", id="no-grant"),
        pytest.param({"grant_types": ["password"]}, "grant types must be among", id="password"),
        pytest.param({"grant_types": ["implicit"]}, "grant types must be among", id="implicit"),
        pytest.param(
            {"grant_types": ["client_credentials"], "public": True},
            "public client cannot use client credentials",
            id="public-client-credentials",
        ),
        pytest.param(
            {"grant_types": ["authorization_code"]},
            "needs at least one redirect URI",
            id="code-without-redirect",
        ),
        # Every grant issues access tokens, and RFC 9068 §2.2 requires their `aud`: with none,
        # every verifier would refuse them.
        pytest.param(
            {"grant_types": ["client_credentials"]},
            "a client needs at least one audience",
            id="no-audience",
        ),
        pytest.param(
            {"grant_types": ["client_credentials"], "audiences": [" ", ""]},
            "a client needs at least one audience",
            id="blank-audiences",
        ),
    ]
    + [
        pytest.param(
            {"grant_types": ["authorization_code"], "redirect_uris": [uri]},
            "redirect URI",
            id=f"redirect-{name}",
        )
        for name, uri in [
            ("http-remote", "http://app.example/cb"),
            ("fragment", "https://app.example/cb#x"),
            ("empty-fragment", "https://app.example/cb#"),
            ("relative", "/cb"),
            ("javascript", "javascript:alert(1)"),
            ("javascript-case", "JavaScript:alert(1)"),
            ("data", "data:text/html,hi"),
            ("file", "file:///etc/passwd"),
        ]
    ],
)
async def test_registration_refuses(
    running: RunningAuthority, registration: dict[str, Any], message: str
) -> None:
    before = await database_rows(running)
    with pytest.raises(InvalidRequest, match=message):
        await running.authority.create_client("bad", **registration)
    assert await database_rows(running) == before


@pytest.mark.parametrize("name", ["", "   ", "n" * 201], ids=["empty", "blank", "too-long"])
async def test_registration_refuses_a_name_no_one_could_tell_apart_or_store(
    running: RunningAuthority, name: str
) -> None:
    before = await database_rows(running)
    with pytest.raises(InvalidRequest, match="a client needs a name, at most 200 characters"):
        await running.authority.create_client(name, grant_types=["client_credentials"])
    assert await database_rows(running) == before


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("https://app.example/callback?x=1", id="https-with-query"),
        pytest.param("http://127.0.0.1:9000/cb", id="loopback-ipv4"),
        pytest.param("http://localhost/cb", id="localhost"),
        pytest.param("http://[::1]:8080/cb", id="loopback-ipv6"),
        pytest.param("com.example.app:/oauth2redirect", id="native-private-use-scheme"),
    ],
)
async def test_registration_accepts_redirect_uri(running: RunningAuthority, uri: str) -> None:
    created = await running.authority.create_client(
        "app", grant_types=["authorization_code"], redirect_uris=[uri], audiences=["api"]
    )
    assert (await running.authority.get_client(created.client_id)).redirect_uris == (uri,)


async def test_a_client_id_is_registered_once(running: RunningAuthority) -> None:
    await running.authority.create_client(
        "a", grant_types=["client_credentials"], audiences=["api"], client_id="svc"
    )
    with pytest.raises(InvalidRequest, match="already exists"):
        await running.authority.create_client(
            "b", grant_types=["client_credentials"], audiences=["api"], client_id="svc"
        )


async def test_secrets_are_stored_only_as_digests(running: RunningAuthority) -> None:
    created = await running.authority.create_client(
        "svc", grant_types=["client_credentials"], audiences=["api"]
    )
    assert opaque.looks_like(opaque.Kind.CLIENT_SECRET, created.client_secret)
    rows = json.dumps(await database_rows(running), default=repr)
    assert created.client_secret not in rows
    record = await running.authority.get_client(created.client_id)
    assert record.secret_digest == opaque.digest(created.client_secret)


async def test_a_public_client_has_no_secret(running: RunningAuthority) -> None:
    created = await running.authority.create_client(
        "spa",
        grant_types=["authorization_code"],
        redirect_uris=["https://spa.example/cb"],
        audiences=["api"],
        public=True,
    )
    assert created.client_secret == ""
    assert (await running.authority.get_client(created.client_id)).secret_digest is None
    with pytest.raises(NotFound):
        await running.authority.rotate_client_secret(created.client_id)


async def test_registration_normalises_scopes_and_grants(running: RunningAuthority) -> None:
    created = await running.authority.create_client(
        "svc",
        grant_types=["client_credentials", "client_credentials"],
        scopes=["read write", "read"],
        audiences=["api other", "api"],
    )
    record = await running.authority.get_client(created.client_id)
    assert record.grant_types == ("client_credentials",)
    assert record.scopes == ("read", "write")
    assert record.audiences == ("api", "other")


async def test_dev_bootstrap_leaves_a_registry_with_clients_and_their_file_alone(
    running: RunningAuthority,
) -> None:
    assert await bootstrap_dev(running.authority) is not None  # beside the harness's admin
    before = await database_rows(running)
    assert await bootstrap_dev(running.authority) is None
    assert await database_rows(running) == before


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.unlink(), id="deleted"),
        pytest.param(lambda path: path.write_text(""), id="cut-short"),
        pytest.param(lambda path: path.write_text('{"admin": {}}'), id="edited"),
    ],
)
async def test_dev_bootstrap_writes_new_dev_clients_when_their_file_is_lost(
    running: RunningAuthority, damage: Callable[[Path], object]
) -> None:
    """With clients registered and the file gone, `make run` had stopped on "dev-credentials.json
    does not exist: run `make run` once": the command that had just failed."""
    first = await bootstrap_dev(running.authority)
    assert first is not None
    path = running.settings.data_dir / DEV_CREDENTIALS
    damage(path)
    again = await bootstrap_dev(running.authority)
    assert again is not None
    assert again["gateway"]["client_id"] != first["gateway"]["client_id"]
    assert json.loads(path.read_text()) == again
    assert read_dev_credentials(running.settings, "")["gateway"] == again["gateway"]


def test_unreadable_dev_credentials_are_a_configuration_error_naming_the_file(
    tmp_path: Path,
) -> None:
    settings = throwaway_settings(tmp_path)
    (tmp_path / DEV_CREDENTIALS).write_text("{")
    with pytest.raises(ConfigError, match=f"{DEV_CREDENTIALS} cannot be read: run `make run`"):
        read_dev_credentials(settings, "pass --client-id")


async def test_dev_bootstrap_on_an_empty_registry(tmp_path) -> None:
    authority = await open_authority(throwaway_settings(tmp_path))
    try:
        created = await bootstrap_dev(authority)
        assert created is not None
        assert set(created) == {"admin", "gateway", "demo", "web"}
        path = tmp_path / DEV_CREDENTIALS
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert json.loads(path.read_text()) == created
        demo = created["demo"]
        issued = await authority.client_credentials(
            client_id=demo["client_id"], client_secret=demo["client_secret"], audience=["demo-api"]
        )
        assert issued.claims.aud == ("demo-api",)
        web = await authority.get_client(created["web"]["client_id"])
        assert web.public
        assert await bootstrap_dev(authority) is None  # a second run changes nothing
    finally:
        await authority.close()
