"""Client registration: what is refused, how secrets are kept; the dev bootstrap."""

from __future__ import annotations

import asyncio
import json
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from authsvc.authority import open_authority
from authsvc.config import ConfigError
from authsvc.errors import InvalidRequest, NotFound
from authsvc.serve import DEV_CREDENTIALS, bootstrap_dev, read_dev_credentials
from authsvc.storage.records import ClientRecord
from authsvc.storage.sql import Tx
from authsvc.testing import RunningAuthority, start_authority, throwaway_settings
from authsvc.tokens import opaque
from tests.authsvc.calls import database_rows
from tests.conftest import TEST_POOL_SIZE
from tests.databases import asyncpg_dsn
from tests.waiting import eventually


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


TAKEN_BY_A_USER = "is a user's subject, and a client's tokens carry its id as sub"


async def test_a_client_id_is_never_a_users_subject(running: RunningAuthority) -> None:
    """RFC 9068 §5, the other way round from test_issuance's: a client's own tokens would carry
    the subject of someone's user tokens as `sub`. A subject of a family, revoked or not, or
    of a user who has none yet."""
    app = await running.create_client("app", grant_types=["refresh_token"])
    pair = await running.authority.issue_token_pair(subject="orders", client_id=app.client_id)
    await running.authority.revoke_family(pair.family.family_id)
    alice = await running.create_user("alice", "correct horse battery")
    before = await database_rows(running)
    for taken in ("orders", alice):
        with pytest.raises(InvalidRequest, match=re.escape(TAKEN_BY_A_USER)):
            await running.authority.create_client(
                "orders", grant_types=["client_credentials"], audiences=["api"], client_id=taken
            )
    assert await database_rows(running) == before


@pytest.mark.postgres
async def test_a_client_id_chosen_while_a_family_starts_for_it_is_refused(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race on PostgreSQL: a family for subject `orders` written, its look for a client
    `orders` made and found nothing, not committed yet; meanwhile `orders` is registered. Its
    look among the subjects cannot see the uncommitted family, so it waits for the family to
    commit (`Tx.lock_new_families`), then sees it. (SQLite runs one writer at a time.)"""
    looked, go_on = asyncio.Event(), asyncio.Event()
    get_client = Tx.get_client

    async def pausing_after_the_first_look(self: Tx, client_id: str) -> ClientRecord | None:
        found = await get_client(self, client_id)
        if client_id == "orders" and not looked.is_set():
            looked.set()
            await go_on.wait()
        return found

    async def registration_waits_for_families() -> bool:
        connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            waiting = await connection.fetchval(
                "SELECT count(*) FROM pg_locks"
                " WHERE NOT granted AND relation = 'families'::regclass"
            )
        finally:
            await connection.close()
        return bool(waiting)

    async with start_authority(
        tmp_path, database_url=postgres_url, db_pool_size=TEST_POOL_SIZE
    ) as r:
        app = await r.create_client("app", grant_types=["refresh_token"])
        monkeypatch.setattr(Tx, "get_client", pausing_after_the_first_look)
        issuing = asyncio.create_task(
            r.authority.issue_token_pair(subject="orders", client_id=app.client_id)
        )
        await looked.wait()
        registering = asyncio.create_task(
            r.authority.create_client(
                "orders", grant_types=["client_credentials"], audiences=["api"], client_id="orders"
            )
        )
        # Registered already (the race lost), or waiting for the family to commit.
        await eventually(lambda: registering.done() or registration_waits_for_families())
        go_on.set()
        await issuing
        with pytest.raises(InvalidRequest, match=re.escape(TAKEN_BY_A_USER)):
            await registering


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
