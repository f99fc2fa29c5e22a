"""A database server that refuses us (no such database or role, a wrong password) is a
configuration error naming AUTHSVC_DATABASE_URL, and the URL is only ever shown without its
password."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy.exc import DBAPIError

from authsvc.config import ConfigError
from authsvc.errors import InvalidRequest, TemporarilyUnavailable
from authsvc.rpc.status import status_for
from authsvc.storage.sql import DatabaseRefused, classify, database_address, printable_url

PASSWORD = "pw-that-must-not-show"


class DriverError(Exception):
    """What a driver raises: a message and the server's SQLSTATE."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def wrapped(message: str, sqlstate: str) -> DBAPIError:
    return DBAPIError(None, None, DriverError(message, sqlstate))


@pytest.mark.parametrize(
    ("sqlstate", "message", "what"),
    [
        pytest.param(
            "3D000", 'database "orders" does not exist', "no such database", id="no-database"
        ),
        pytest.param("28000", 'role "app" does not exist', "no such role", id="no-role"),
        pytest.param(
            "28P01",
            'password authentication failed for user "app"',
            "authentication failed",
            id="wrong-password",
        ),
        pytest.param(
            "28000",
            'no pg_hba.conf entry for host "10.0.0.9", user "app", database "orders"',
            "may not connect from here",
            id="pg-hba",
        ),
    ],
)
def test_a_refusal_is_a_configuration_error_saying_what_is_wrong(
    sqlstate: str, message: str, what: str
) -> None:
    refused = classify(wrapped(message, sqlstate))
    assert isinstance(refused, DatabaseRefused)
    assert isinstance(refused, ConfigError)  # the CLI's exit 2
    text = str(refused)
    assert text.startswith("AUTHSVC_DATABASE_URL: ")
    assert what in text
    assert message in text  # the server's words name the database or the role
    url = f"postgresql+asyncpg://app:{PASSWORD}@db.internal:6432/orders"
    named = str(refused.naming(url))
    assert named.startswith("AUTHSVC_DATABASE_URL=postgresql+asyncpg://app:***@db.internal:6432/")
    assert PASSWORD not in named


def test_an_outage_is_still_temporarily_unavailable() -> None:
    outage = classify(wrapped("the database system is shutting down", "57P03"))
    assert isinstance(outage, TemporarilyUnavailable)


@pytest.mark.parametrize(
    ("sqlstate", "said"),
    [
        pytest.param("22021", 'invalid byte sequence for encoding "UTF8": 0x00', id="nul"),
        pytest.param("22001", "value too long for type character varying(200)", id="too-long"),
    ],
)
def test_a_value_the_database_cannot_store_is_the_callers_invalid_request(
    sqlstate: str, said: str
) -> None:
    refused = classify(wrapped(said, sqlstate))
    assert isinstance(refused, InvalidRequest)
    assert status_for(refused) is grpc.StatusCode.INVALID_ARGUMENT
    assert said not in refused.description  # the server's words name our columns


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"postgresql+asyncpg://app:{PASSWORD}@db/orders", id="user-part"),
        pytest.param(f"postgresql+asyncpg://app@db/orders?password={PASSWORD}", id="query"),
        pytest.param(f"postgresql+asyncpg://app@db/orders?sslpassword={PASSWORD}", id="ssl-key"),
        # Unescaped, an @ in the password splits it for SQLAlchemy's parser, tail into the host.
        pytest.param(f"postgresql+asyncpg://app:{PASSWORD}@x@db/orders", id="at-sign"),
    ],
)
def test_printable_url_hides_every_password(url: str) -> None:
    shown = printable_url(url)
    assert PASSWORD not in shown
    assert shown.startswith("postgresql+asyncpg://app")
    assert "@db/orders" in shown


@pytest.mark.parametrize(
    ("url", "address"),
    [
        pytest.param("postgresql+asyncpg://app:pw@db.internal:6432/orders", "db.internal:6432"),
        pytest.param("postgresql+asyncpg://app@10.0.0.5/orders", "10.0.0.5:5432", id="default"),
        pytest.param("postgresql+asyncpg://app@[::1]:5433/orders", "[::1]:5433", id="ipv6"),
        pytest.param("postgresql+asyncpg://app@/orders?host=/run/pg", None, id="unix-socket"),
        pytest.param("sqlite+aiosqlite:///var/authsvc.db", None, id="sqlite"),
        pytest.param("postgresql+asyncpg://app:p@ss@db:6432/orders", "db:6432", id="at-sign"),
    ],
)
def test_database_address(url: str, address: str | None) -> None:
    assert database_address(url) == address


def test_a_refusal_while_serving_is_temporarily_unavailable_and_tells_nothing() -> None:
    # A password rotated under a running replica: its callers should retry, as during an
    # outage, and learn nothing of the configuration; the CLI still reads the whole message.
    refused = classify(wrapped('role "app" does not exist', "28000"))
    assert isinstance(refused, TemporarilyUnavailable)
    assert status_for(refused) is grpc.StatusCode.UNAVAILABLE
    assert "app" not in refused.description
    assert "AUTHSVC" not in refused.description
    assert 'role "app" does not exist' in str(refused)
