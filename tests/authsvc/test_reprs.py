"""Secrets never reach a repr: every object that holds one is checked here."""

from __future__ import annotations

import pytest
from authsvc_client import PublishedKey

from authsvc.authorization_codes import IssuedCode
from authsvc.client_registry import RegisteredClient
from authsvc.config import Settings
from authsvc.issuance import IssuedAccessToken, IssuedTokenPair
from authsvc.keys import material
from authsvc.keys.ring import Signer
from authsvc.keys.sealing import Sealer, new_kek_text
from authsvc.passwords import PasswordCheck, Passwords
from authsvc.storage.records import (
    AuthorizationCodeRecord,
    ClientRecord,
    FamilyRecord,
    KeyRecord,
    RefreshTokenRecord,
    UserRecord,
)
from authsvc.testing import RunningAuthority
from authsvc.tokens import opaque
from authsvc.tokens.access import AccessClaims

REFRESH = opaque.new_secret(opaque.Kind.REFRESH_TOKEN)
SECRET = opaque.new_secret(opaque.Kind.CLIENT_SECRET)
CODE = opaque.new_secret(opaque.Kind.AUTHORIZATION_CODE)
ACCESS = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVzLWZvci10ZXN0"
DIGEST = b"\x9f" * 32
KEK = new_kek_text()
PASSWORD_HASH = Passwords().hash_now("correct horse battery staple")
GENERATED = material.generate("EdDSA")
PRIVATE = material.load_private(GENERATED.private_pem)
CLAIMS = AccessClaims("iss", "alice", ("api",), 2, 1, "jti", "app", ("read",), "family")
FAMILY = FamilyRecord(
    "family", "alice", "app", "laptop", ("read",), ("api",), 1, 1, 9, 9, None, None
)


@pytest.mark.parametrize(
    ("holder", "secrets"),
    [
        pytest.param(RegisteredClient("app", SECRET), [SECRET], id="RegisteredClient"),
        pytest.param(IssuedAccessToken(ACCESS, CLAIMS, 600), [ACCESS], id="IssuedAccessToken"),
        pytest.param(
            IssuedTokenPair(IssuedAccessToken(ACCESS, CLAIMS, 600), FAMILY, REFRESH),
            [ACCESS, REFRESH],
            id="IssuedTokenPair",
        ),
        pytest.param(IssuedCode(CODE, 60), [CODE], id="IssuedCode"),
        pytest.param(
            Settings(kek=KEK, database_url="postgresql+asyncpg://u:pa55word@db/authsvc"),
            [KEK, "pa55word"],
            id="Settings",
        ),
        pytest.param(Sealer(b"\x01" * 32), [repr(b"\x01" * 32)], id="Sealer"),
        pytest.param(GENERATED, [GENERATED.private_pem.decode()], id="GeneratedKey"),
        pytest.param(Signer("kid", "EdDSA", PRIVATE), ["PRIVATE", "OKPKey"], id="Signer"),
        pytest.param(
            PublishedKey(kid="kid", key=PRIVATE, alg="EdDSA"),
            ["PRIVATE", "OKPKey"],
            id="PublishedKey",
        ),
        pytest.param(
            KeyRecord("kid", "EdDSA", "active", "{}", 1, 1, None, b"sealed-bytes"),
            ["sealed-bytes"],
            id="KeyRecord",
        ),
        pytest.param(
            ClientRecord("app", "app", False, False, (), (), (), (), 1, None, DIGEST),
            [repr(DIGEST)[2:20]],
            id="ClientRecord",
        ),
        pytest.param(
            UserRecord("s", "alice", 1, PASSWORD_HASH), [PASSWORD_HASH, "argon2"], id="UserRecord"
        ),
        pytest.param(
            RefreshTokenRecord("family", 1, None, 9, DIGEST),
            [repr(DIGEST)[2:20]],
            id="RefreshTokenRecord",
        ),
        pytest.param(
            AuthorizationCodeRecord(
                "app",
                "https://cb",
                "alice",
                (),
                (),
                "",
                1,
                60,
                None,
                None,
                "challenge-text",
                DIGEST,
            ),
            ["challenge-text", repr(DIGEST)[2:20]],
            id="AuthorizationCodeRecord",
        ),
        pytest.param(
            PasswordCheck(ok=True, new_hash=PASSWORD_HASH),
            [PASSWORD_HASH, "argon2"],
            id="PasswordCheck",
        ),
    ],
)
def test_repr_holds_no_secret(holder: object, secrets: list[str]) -> None:
    text = repr(holder)
    for secret in secrets:
        assert secret not in text


async def test_the_running_authority_repr_holds_no_secret(running: RunningAuthority) -> None:
    ctx = running.authority.ctx
    text = repr(ctx) + repr(running) + repr(running.authority.verifier)
    private = ctx.key_ring.signer.key.as_dict(private=True)["d"]
    for secret in (
        running.settings.kek,
        repr(ctx.grace_key)[2:20],
        repr(ctx.login_key)[2:20],
        running.admin.client_secret,
        private,
    ):
        assert secret not in text
