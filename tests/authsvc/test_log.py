"""Logs: JSON lines, secrets redacted on the way out — and none logged in the first place."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc.log import JsonFormatter, redact
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
