"""The `authsvc` command, run in process: clients, keys, users, token, migrate, kek, and the
messages of a start that cannot work."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from authsvc.cli import main
from authsvc.keys.sealing import new_kek_text
from authsvc.storage import migrate
from authsvc.tokens import opaque
from tests.databases import PostgresDatabases

PASSWORD = "pw-that-must-not-show"


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """AUTHSVC_* for a throwaway data directory; the root logger restored afterwards."""
    for name in [n for n in os.environ if n.startswith("AUTHSVC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AUTHSVC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AUTHSVC_KEK", new_kek_text())
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield tmp_path
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def run(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> str:
    assert main(list(argv)) == code
    return capsys.readouterr().out


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    return json.loads(run(capsys, *argv))


def payload_of(token: str, part: int = 1) -> dict[str, Any]:
    """The token's claims, or with `part=0` its header."""
    body = token.split(".")[part]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return result


def test_clients_create_prints_id_and_secret_then_token_works(capsys) -> None:
    created = run_json(
        capsys,
        "clients", "create", "--name", "orders", "--grant", "client_credentials",
        "--scope", "orders:read", "--audience", "orders-api", "--json",
    )  # fmt: skip
    assert set(created) == {"client_id", "client_secret"}
    assert opaque.looks_like(opaque.Kind.CLIENT_SECRET, created["client_secret"])

    issued = run_json(
        capsys,
        "--json", "token", "--client-id", created["client_id"],
        "--client-secret", created["client_secret"],
    )  # fmt: skip
    assert issued["expires_in"] == 600
    claims = payload_of(issued["access_token"])
    assert (claims["client_id"], claims["scope"], claims["aud"]) == (
        created["client_id"],
        "orders:read",
        ["orders-api"],
    )


def test_json_flag_works_before_the_command_too(capsys) -> None:
    created = run_json(capsys, "--json", "clients", "create", "--name", "svc", "--audience", "api")
    assert created["client_secret"]


def test_clients_create_without_json_shows_the_secret_once(capsys) -> None:
    out = run(capsys, "clients", "create", "--name", "svc", "--scope", "a b", "--audience", "api")
    assert "client_secret: asc_" in out
    assert "shown once" in out


def test_clients_list_disable_and_rotate_secret(capsys) -> None:
    created = run_json(
        capsys,
        "clients",
        "create",
        "--name",
        "svc",
        "--scope",
        "read",
        "--audience",
        "api",
        "--json",
    )
    client_id, secret = created["client_id"], created["client_secret"]
    [listed] = run_json(capsys, "clients", "list", "--json")
    assert listed == {
        "client_id": client_id,
        "name": "svc",
        "public": False,
        "grant_types": ["client_credentials"],
        "scopes": ["read"],
        "audiences": ["api"],
        "redirect_uris": [],
        "disabled": False,
    }
    assert secret not in json.dumps(listed)
    assert client_id in run(capsys, "clients", "list")

    rotated = run_json(capsys, "clients", "rotate-secret", client_id, "--json")
    assert rotated["client_id"] == client_id
    assert rotated["client_secret"] != secret
    # The old secret is dead, the new one works.
    assert main(["token", "--client-id", client_id, "--client-secret", secret]) == 1
    assert "invalid_client" in capsys.readouterr().err
    run(capsys, "token", "--client-id", client_id, "--client-secret", rotated["client_secret"])

    disabled = run_json(capsys, "clients", "disable", client_id, "--json")
    assert disabled == {"client_id": client_id, "families_revoked": 0}
    [listed] = run_json(capsys, "clients", "list", "--json")
    assert listed["disabled"]
    run(
        capsys,
        "token",
        "--client-id",
        client_id,
        "--client-secret",
        rotated["client_secret"],
        code=1,
    )


def test_a_public_client_created_without_grants_gets_the_code_flow(capsys) -> None:
    """It had been refused with "grant types must be among ...", for grants nobody named."""
    created = run_json(
        capsys,
        "clients", "create", "--name", "web", "--public",
        "--redirect-uri", "https://app.example/cb", "--audience", "api", "--json",
    )  # fmt: skip
    assert created["client_secret"] == ""
    listed = run_json(capsys, "--json", "clients", "list")
    [web] = [client for client in listed if client["client_id"] == created["client_id"]]
    assert web["grant_types"] == ["authorization_code", "refresh_token"]


@pytest.mark.parametrize("terminal", [True, False], ids=["at-a-terminal", "from-a-pipe"])
def test_token_reads_a_secret_left_off_the_command_line(
    capsys, monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    """At a terminal it had waited on stdin with no prompt, echoing what was typed."""
    created = run_json(
        capsys,
        "clients",
        "create",
        "--name",
        "orders",
        "--grant",
        "client_credentials",
        "--audience",
        "orders-api",
        "--json",
    )
    asked: list[str] = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: terminal)
    monkeypatch.setattr("sys.stdin.readline", lambda: created["client_secret"] + "\n")
    monkeypatch.setattr(
        "getpass.getpass", lambda prompt: asked.append(prompt) or created["client_secret"]
    )
    issued = run_json(capsys, "--json", "token", "--client-id", created["client_id"])
    assert issued["expires_in"] == 600
    assert asked == (["client secret: "] if terminal else [])


def test_a_client_without_an_audience_is_refused_and_told_what_to_give(capsys) -> None:
    # Its tokens would carry no `aud`, and every verifier would refuse them.
    assert main(["clients", "create", "--name", "svc"]) == 1
    captured = capsys.readouterr()
    assert "a client needs at least one audience" in captured.err
    assert "--audience" in captured.err
    assert run_json(capsys, "--json", "clients", "list") == []


@pytest.mark.parametrize("answer", ["\n", ""], ids=["empty-line", "end-of-input"])
def test_token_without_a_secret_says_so(
    capsys, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    """An empty stdin had been sent as the secret and answered 'client authentication failed'."""
    created = run_json(capsys, "clients", "create", "--name", "svc", "--audience", "api", "--json")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    monkeypatch.setattr("sys.stdin.readline", lambda: answer)
    assert main(["token", "--client-id", created["client_id"]]) == 1
    err = capsys.readouterr().err
    assert "no client secret" in err
    assert "--client-secret" in err


def test_token_with_an_empty_client_secret_says_so(capsys) -> None:
    # `--client-secret ""` (an unset shell variable) was sent and failed as invalid_client.
    created = run_json(capsys, "clients", "create", "--name", "svc", "--audience", "api", "--json")
    assert main(["token", "--client-id", created["client_id"], "--client-secret", ""]) == 1
    assert "no client secret" in capsys.readouterr().err


def test_token_failure_is_reported_without_the_secret(capsys) -> None:
    created = run_json(capsys, "clients", "create", "--name", "svc", "--audience", "api", "--json")
    wrong = opaque.new_secret(opaque.Kind.CLIENT_SECRET)
    assert main(["token", "--client-id", created["client_id"], "--client-secret", wrong]) == 1
    captured = capsys.readouterr()
    assert "authsvc: invalid_client: client authentication failed" in captured.err
    assert wrong not in captured.err + captured.out


def test_clients_create_admin(capsys) -> None:
    created = run_json(capsys, "clients", "create", "--name", "ops", "--admin", "--json")
    token = run(capsys, "token", "--client-id", created["client_id"], "--client-secret",
                created["client_secret"], "--audience", "authsvc").strip()  # fmt: skip
    claims = payload_of(token)
    assert claims["aud"] == ["authsvc"]
    assert set(claims["scope"].split()) >= {"authsvc:admin", "authsvc:revoke", "authsvc:issue"}


def test_clients_create_refuses_bad_input(capsys) -> None:
    assert main(["clients", "create", "--name", "x", "--grant", "password"]) == 1
    assert "invalid_request" in capsys.readouterr().err


def test_keys_list_and_rotate(capsys) -> None:
    keys = run_json(capsys, "keys", "list", "--json")
    assert sorted(k["state"] for k in keys) == ["active", "pending"]
    [active] = [k["kid"] for k in keys if k["state"] == "active"]
    [pending] = [k["kid"] for k in keys if k["state"] == "pending"]

    unchanged = run(capsys, "keys", "rotate")
    assert f"active key unchanged ({active})" in unchanged

    rotated = run_json(capsys, "keys", "rotate", "--immediate", "--json")
    assert rotated["active_kid"] == pending
    states = {k["kid"]: k["state"] for k in run_json(capsys, "keys", "list", "--json")}
    assert states[active] == "retired"
    assert states[pending] == "active"
    assert states[rotated["next_kid"]] == "pending"
    # Tokens are now signed with the new key.
    created = run_json(capsys, "clients", "create", "--name", "svc", "--audience", "api", "--json")
    token = run(capsys, "token", "--client-id", created["client_id"], "--client-secret",
                created["client_secret"]).strip()  # fmt: skip
    assert payload_of(token, part=0)["kid"] == pending


def test_keys_rotate_compromised_purges_the_leaked_key(capsys) -> None:
    [leaked] = [
        k["kid"] for k in run_json(capsys, "keys", "list", "--json") if k["state"] == "active"
    ]
    said = run(capsys, "keys", "rotate", "--compromised")
    assert f"purged:     {leaked}" in said
    states = {k["kid"]: k["state"] for k in run_json(capsys, "keys", "list", "--json")}
    assert leaked not in states
    assert sorted(states.values()) == ["active", "pending"]


def test_users_create_with_password_on_stdin(capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery staple\n"))
    created = run_json(
        capsys, "users", "create", "--username", "alice", "--password-stdin", "--json"
    )
    assert created["username"] == "alice"
    assert created["subject"]
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["users", "create", "--username", "bob", "--password-stdin"]) == 1
    assert "password must be 8" in capsys.readouterr().err


def test_users_create_without_a_terminal_needs_password_stdin(capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["users", "create", "--username", "alice"]) == 2
    assert "--password-stdin" in capsys.readouterr().err


def test_migrate(capsys, environment: Path) -> None:
    head = migrate.head_revision()
    first = run_json(capsys, "migrate", "--json")
    assert first == {"from": None, "to": head}
    again = run_json(capsys, "migrate", "--json")
    assert again == {"from": head, "to": head}
    assert (environment / "authsvc.db").exists()


def test_kek_prints_a_usable_key(capsys, monkeypatch) -> None:
    kek = run(capsys, "kek").strip()
    monkeypatch.setenv("AUTHSVC_KEK", kek)
    run(capsys, "keys", "list")


def test_a_configuration_error_exits_2_and_names_the_variable(capsys, monkeypatch) -> None:
    monkeypatch.setenv("AUTHSVC_ACCESS_TOKEN_TTL", "forever")
    assert main(["keys", "list"]) == 2
    assert "AUTHSVC_ACCESS_TOKEN_TTL='forever' is not valid" in capsys.readouterr().err


def test_a_mistyped_variable_is_warned_about_at_start(capsys, monkeypatch) -> None:
    # A typo is otherwise silent: this one would leave a replica on a SQLite file of its own.
    monkeypatch.setenv("AUTHSVC_DATABSE_URL", "postgresql+asyncpg://db/authsvc")
    assert main(["keys", "list"]) == 0
    [warning] = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if "DATABSE" in line
    ]
    assert warning["level"] == "warning"
    assert warning["message"] == (
        "AUTHSVC_DATABSE_URL is not a setting of authsvc and is ignored; "
        "did you mean AUTHSVC_DATABASE_URL?"
    )


def test_a_missing_kek_exits_2(capsys, monkeypatch) -> None:
    monkeypatch.delenv("AUTHSVC_KEK")
    assert main(["keys", "list"]) == 2
    assert "AUTHSVC_KEK" in capsys.readouterr().err


def test_the_wrong_kek_is_a_configuration_error(capsys, monkeypatch) -> None:
    run(capsys, "keys", "list")
    monkeypatch.setenv("AUTHSVC_KEK", new_kek_text())
    assert main(["keys", "list"]) == 2
    err = capsys.readouterr().err
    assert "authsvc: configuration error:" in err
    assert "sealed with another key-encryption key" in err
    assert "Traceback" not in err


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["migrate", "serve"])
@pytest.mark.parametrize(
    ("change", "what", "named"),
    [
        pytest.param({"database": "authsvc_no_such_db"}, "no such database", "authsvc_no_such_db",
                     id="no-database"),
        pytest.param({"username": "authsvc_no_such_role"}, "no such role", "authsvc_no_such_role",
                     id="no-role"),
    ],
)  # fmt: skip
def test_a_database_that_refuses_us_exits_2_naming_the_url_but_not_its_password(
    capsys, monkeypatch, postgres_databases: PostgresDatabases, command: str,
    change: dict[str, str], what: str, named: str,
) -> None:  # fmt: skip
    url = make_url(postgres_databases.server_url).set(password=PASSWORD, **change)
    monkeypatch.setenv("AUTHSVC_DATABASE_URL", url.render_as_string(hide_password=False))
    assert main([command]) == 2
    err = capsys.readouterr().err
    shown = url.render_as_string(hide_password=True)
    assert err.startswith(f"authsvc: configuration error: AUTHSVC_DATABASE_URL={shown}: {what}")
    assert named in err
    assert PASSWORD not in err
    assert "Traceback" not in err


def test_an_unreachable_database_is_named_by_its_address_but_not_its_password(
    capsys, monkeypatch
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+asyncpg://app:{PASSWORD}@127.0.0.1:{port}/authsvc"
    monkeypatch.setenv("AUTHSVC_DATABASE_URL", url)
    assert main(["migrate"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"authsvc: AUTHSVC_DATABASE_URL=postgresql+asyncpg://app:***@127.0.0.1:{port}/authsvc: "
        f"the database at 127.0.0.1:{port}",
        # The last line as docs/replicas.md quotes it.
        "authsvc: temporarily_unavailable: the database is unreachable, retry later",
    ]
