"""Private keys at rest: AES-256-GCM under a key-encryption key (KEK).

The KEK comes from `AUTHSVC_KEK` (base64url, 32 bytes) or `AUTHSVC_KEK_FILE`. In dev mode, and only
there, one is generated into the data directory with a warning. The key id is the associated data,
so a sealed key cannot be swapped onto another row.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authsvc.config import ConfigError, Settings, make_directory

log = logging.getLogger(__name__)

_NONCE_BYTES = 12
_VERSION = b"\x01"
DEV_KEK_FILENAME = "kek.key"


class UnsealError(Exception):
    """A sealed key could not be opened: wrong KEK, or the stored bytes were altered."""


class Sealer:
    """Seals and unseals private keys under one KEK."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != 32:
            raise ConfigError("AUTHSVC_KEK: must decode to exactly 32 bytes (256 bits)")
        self._aead = AESGCM(kek)

    def __repr__(self) -> str:
        return "Sealer(kek=<redacted>)"

    def seal(self, kid: str, private_pem: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, private_pem, kid.encode())

    def unseal(self, kid: str, sealed: bytes) -> bytes:
        if sealed[:1] != _VERSION:
            raise UnsealError(f"key {kid}: unknown sealing version")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, kid.encode())
        except InvalidTag:
            raise UnsealError(
                f"key {kid}: cannot unseal; AUTHSVC_KEK is not the key these were sealed with"
            ) from None


def new_kek_text() -> str:
    """A fresh KEK in the text form AUTHSVC_KEK takes."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _decode(text: str, source: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except ValueError:
        raise ConfigError(f"{source}: not base64url; generate one with `authsvc kek`") from None
    if len(raw) != 32:
        raise ConfigError(f"{source}: must decode to 32 bytes; generate one with `authsvc kek`")
    return raw


def load_kek(settings: Settings) -> bytes:
    """The KEK, by precedence: AUTHSVC_KEK, AUTHSVC_KEK_FILE, the data directory's dev file."""
    if settings.kek:
        return _decode(settings.kek, "AUTHSVC_KEK")
    if settings.kek_file is not None:
        try:
            return _decode(settings.kek_file.read_text(), f"AUTHSVC_KEK_FILE={settings.kek_file}")
        except OSError as exc:
            raise ConfigError(f"AUTHSVC_KEK_FILE: cannot read {settings.kek_file}: {exc}") from None
    dev_file = settings.data_dir / DEV_KEK_FILENAME
    if dev_file.exists():
        return _decode(dev_file.read_text(), str(dev_file))
    if not settings.dev:
        raise ConfigError(
            "AUTHSVC_KEK: no key-encryption key; set AUTHSVC_KEK to the output of `authsvc kek` "
            "or point AUTHSVC_KEK_FILE at a file holding it (dev mode generates one, as "
            f"{dev_file}: if `make run` made it elsewhere, set AUTHSVC_DATA_DIR to that folder)"
        )
    make_directory(settings.data_dir, "AUTHSVC_DATA_DIR")
    try:
        fd = os.open(dev_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_kek_text() + "\n")
    except OSError as exc:
        raise ConfigError(
            f"AUTHSVC_DATA_DIR={settings.data_dir}: cannot write the development key-encryption "
            f"key there ({exc.strerror or exc}); dev mode needs the directory writable"
        ) from None
    log.warning(
        "generated a development key-encryption key",
        extra={"path": str(dev_file), "hint": "set AUTHSVC_KEK in production"},
    )
    return _decode(Path(dev_file).read_text(), str(dev_file))
