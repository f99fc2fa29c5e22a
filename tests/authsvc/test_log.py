"""Logs: JSON lines, secrets redacted on the way out — and none logged in the first place."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc import log
from authsvc.clock import ManualClock
from authsvc.log import JsonFormatter, RepeatedFailure, redact
from authsvc.testing import RunningAuthority
from authsvc.tokens import opaque

REFRESH = opaque.new_secret(opaque.Kind.REFRESH_TOKEN)
SECRET = opaque.new_secret(opaque.Kind.CLIENT_SECRET)
CODE = opaque.new_secret(opaque.Kind.AUTHORIZATION_CODE)
JWT = "eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        pytest.param(f"rotating {REFRESH}", "rotating asrt_[redacted]", id="refresh-token"),
        pytest.param(f"secret={SECRET}", "secret=asc_[redacted]", id="client-secret"),
        pytest.param(f"/cb?code={CODE}&state=x", "/cb?code=asac_[redacted]&state=x", id="code"),
        pytest.param(f'{{"token": "{REFRESH}"}}', '{"token": "asrt_[redacted]"}', id="in-json"),
        pytest.param(f"token {JWT} refused", "token [redacted-jwt] refused", id="jwt"),
        pytest.param(f"Bearer {JWT}", "Bearer [redacted-jwt]", id="bearer-jwt"),
        pytest.param(
            "authorization: Bearer abc.def-ghi", "authorization: Bearer [redacted]", id="bearer"
        ),
        pytest.param("BEARER s3cr3t~token+/=", "BEARER [redacted]", id="bearer-any-case"),
        pytest.param(f"{REFRESH}{REFRESH}", "asrt_[redacted]", id="back-to-back"),
        pytest.param(
            "connecting to postgresql+asyncpg://authsvc:hunter2@db:5432/authsvc",
            "connecting to postgresql+asyncpg://authsvc:[redacted]@db:5432/authsvc",
            id="database-url-password",
        ),
        pytest.param(
            "postgresql://authsvc:p%40ss:w0rd@db/authsvc",
            "postgresql://authsvc:[redacted]@db/authsvc",
            id="database-url-odd-password",
        ),
        pytest.param(
            "host=db user=authsvc password=hunter2 dbname=authsvc",
            "host=db user=authsvc password=[redacted] dbname=authsvc",
            id="libpq-keyword-password",
        ),
    ],
)
def test_redact(text: str, redacted: str) -> None:
    assert redact(text) == redacted


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("family 8Bu-9Ro56v-t9F70guswAA revoked", id="family-id"),
        pytest.param("asrt_short", id="prefix-with-short-body"),
        pytest.param("refresh tokens start with asrt_", id="bare-prefix"),
        pytest.param("kid xorRWMz0uH-UiKYvrJ0hYsiZp_L7rTh6ewKdXRet164", id="kid"),
        pytest.param("eyJ alone", id="not-a-jwt"),
        pytest.param("redirect to https://app.example:8443/cb?x=1", id="url-with-port"),
        pytest.param("postgresql+asyncpg://authsvc@db:5432/authsvc", id="url-without-password"),
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("authsvc.test", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_formatter_writes_one_json_object_with_extras() -> None:
    line = JsonFormatter().format(_record("rotated %s", "family-1", family_id="family-1"))
    entry = json.loads(line)
    assert entry["message"] == "rotated family-1"
    assert entry["family_id"] == "family-1"
    assert (entry["level"], entry["logger"]) == ("info", "authsvc.test")
    assert entry["time"].endswith("Z")
    assert "\n" not in line


def test_json_formatter_redacts_message_extras_and_traceback() -> None:
    try:
        raise ValueError(f"bad token {REFRESH}")
    except ValueError:
        record = _record("failed for %s", SECRET, token=JWT, header=f"Bearer {JWT}")
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    for secret in (REFRESH, SECRET, JWT):
        assert secret not in line
    entry = json.loads(line)
    assert "asrt_[redacted]" in entry["traceback"]
    assert entry["token"] == "[redacted-jwt]"


async def test_a_whole_session_logs_no_secret(
    running: RunningAuthority, tokens, authorization, admin, app, caplog
) -> None:
    # Code never logs a secret on purpose: the raw records, before redaction, hold none.
    caplog.set_level(logging.DEBUG)
    password = "correct horse battery staple"
    await running.create_user("alice", password)
    await authorization.AuthenticateUser(
        pb.AuthenticateUserRequest(username="alice", password=password), metadata=admin
    )
    pair = await tokens.IssueTokenPair(
        pb.IssueTokenPairRequest(subject="alice", client_id=app.client_id), metadata=admin
    )
    rotated = await tokens.Rotate(
        pb.RotateRequest(refresh_token=pair.refresh_token), metadata=admin
    )
    await tokens.Rotate(pb.RotateRequest(refresh_token=pair.refresh_token), metadata=admin).code()
    await tokens.RotateKeys(pb.RotateKeysRequest(immediate=True), metadata=admin)
    secrets = [
        password,
        app.client_secret,
        running.admin.client_secret,
        pair.refresh_token,
        pair.access_token,
        rotated.refresh_token,
        rotated.access_token,
        admin[0][1],
    ]
    formatter = logging.Formatter("%(message)s")
    for record in caplog.records:
        raw = formatter.format(record) + json.dumps(vars(record), default=str)
        for secret in secrets:
            assert secret not in raw, f"{record.name} logged a secret: {record.getMessage()}"
    assert any(r.name == "authsvc.keys.rotation" for r in caplog.records)  # logging did happen


# A failure a loop meets at every try


def _failing_for(failures: RepeatedFailure, clock: ManualClock, tries: int, step: float) -> None:
    for _ in range(tries):
        try:
            raise RuntimeError("a bug")
        except RuntimeError:
            failures.failed()
        clock.advance(step)


def test_a_repeated_failure_is_logged_in_full_once_then_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    failures = RepeatedFailure(logging.getLogger("t"), "reading events", clock, every=60)
    caplog.set_level(logging.INFO, logger="t")
    _failing_for(failures, clock, tries=150, step=1.0)  # once a second, for 150 s
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines == [
        ("ERROR", "reading events failed; retrying", True),
        (
            "WARNING",
            "reading events still failing: 61 tries in 60 s; the last: "
            "RuntimeError: a bug; retrying",
            False,
        ),
        (
            "WARNING",
            "reading events still failing: 121 tries in 120 s; the last: "
            "RuntimeError: a bug; retrying",
            False,
        ),
    ]
    caplog.clear()
    failures.succeeded()
    failures.succeeded()
    assert [r.getMessage() for r in caplog.records] == [
        "reading events works again, after 150 failed tries in 150 s"
    ]


def test_an_outage_is_a_warning_and_a_new_one_is_logged_again_in_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    failures = RepeatedFailure(logging.getLogger("t"), "reloading", clock)
    caplog.set_level(logging.WARNING, logger="t")  # as an operator may keep it
    failures.failed("the database is unavailable")
    failures.failed("the database is unavailable")
    failures.succeeded()
    failures.failed("the database is unavailable")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "reloading: the database is unavailable; retrying"),
        ("WARNING", "reloading works again, after 2 failed tries in 0 s"),
        ("WARNING", "reloading: the database is unavailable; retrying"),
    ]
    assert all(r.exc_info is None for r in caplog.records)


def test_all_going_well_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    failures = RepeatedFailure(logging.getLogger("t"), "reading events", ManualClock())
    caplog.set_level(logging.DEBUG, logger="t")
    failures.succeeded()
    assert caplog.records == []


def test_a_bug_met_during_an_outage_is_logged_in_full(caplog: pytest.LogCaptureFixture) -> None:
    # It had been swallowed: at most a "the last:" line a minute later, without its traceback,
    # and none at all when the outage's own failure came last.
    clock = ManualClock()
    failures = RepeatedFailure(logging.getLogger("t"), "reading events", clock)
    caplog.set_level(logging.INFO, logger="t")
    failures.failed("the database is unavailable")
    _failing_for(failures, clock, tries=2, step=1.0)
    failures.failed("the database is unavailable")
    failures.failed("the database connection was lost")
    assert [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        ("WARNING", "reading events: the database is unavailable; retrying", False),
        ("ERROR", "reading events failed; retrying", True),
        ("WARNING", "reading events: the database connection was lost; retrying", False),
    ]


def test_the_kinds_logged_in_full_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    failures = RepeatedFailure(logging.getLogger("t"), "reading events", clock)
    caplog.set_level(logging.INFO, logger="t")
    for n in range(3 * log.MAX_KINDS):
        failures.failed(f"outage {n}")
    assert len(caplog.records) == log.MAX_KINDS
    caplog.clear()
    failures.succeeded()  # a new run of failures logs its own kinds again
    failures.failed("outage 0")
    assert [r.getMessage() for r in caplog.records][1:] == ["reading events: outage 0; retrying"]


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(JsonFormatter().format(record) for record in caplog.records)


def test_a_repeated_failure_logs_no_database_password(caplog: pytest.LogCaptureFixture) -> None:
    # A driver's error may quote the URL it was given, password and all.
    clock = ManualClock()
    failures = RepeatedFailure(logging.getLogger("t"), "reading events", clock)
    caplog.set_level(logging.INFO, logger="t")
    for _ in range(2):
        try:
            raise RuntimeError("cannot connect to postgresql://authsvc:hunter2@db/authsvc")
        except RuntimeError:
            failures.failed()
        clock.advance(60)
    assert len(caplog.records) == 2  # in full, then the summary line
    assert "hunter2" not in _logged(caplog)


def test_a_repeated_failure_cuts_its_summary_after_redacting_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Cut first, the summary kept the token's prefix and 19 characters of it: too few to look
    # like a token to the redaction on the way out.
    clock = ManualClock()
    failures = RepeatedFailure(logging.getLogger("t"), "reading events", clock)
    caplog.set_level(logging.INFO, logger="t")
    for _ in range(2):
        try:
            raise RuntimeError("x" * 161 + " " + REFRESH)
        except RuntimeError:
            failures.failed()
        clock.advance(60)
    assert "the last: RuntimeError: xxx" in caplog.records[1].getMessage()
    assert REFRESH[5:24] not in _logged(caplog)
