"""Private keys at rest: AES-GCM under the KEK, the kid bound as associated data; loading the KEK."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from authsvc.config import ConfigError, Settings
from authsvc.keys.sealing import DEV_KEK_FILENAME, Sealer, UnsealError, load_kek, new_kek_text

KEK = b"\x07" * 32
PEM = b"-----BEGIN PRIVATE KEY-----\nnot really\n-----END PRIVATE KEY-----\n"


def test_seal_round_trip_and_fresh_nonce() -> None:
    sealer = Sealer(KEK)
    first, second = sealer.seal("kid-1", PEM), sealer.seal("kid-1", PEM)
    assert first != second
    assert PEM not in first
    assert sealer.unseal("kid-1", first) == PEM == sealer.unseal("kid-1", second)


@pytest.mark.parametrize(
    ("kek", "kid", "alter", "message"),
    [
        pytest.param(b"\x08" * 32, "kid-1", None, "AUTHSVC_KEK is not the key", id="other-kek"),
        pytest.param(KEK, "kid-2", None, "cannot unseal", id="moved-to-another-kid"),
        pytest.param(KEK, "kid-1", 20, "cannot unseal", id="ciphertext-altered"),
        pytest.param(KEK, "kid-1", 0, "unknown sealing version", id="version-altered"),
    ],
)
def test_unseal_refuses(kek: bytes, kid: str, alter: int | None, message: str) -> None:
    sealed = bytearray(Sealer(KEK).seal("kid-1", PEM))
    if alter is not None:
        sealed[alter] ^= 0x01
    with pytest.raises(UnsealError, match=message):
        Sealer(kek).unseal(kid, bytes(sealed))


def test_kek_must_be_256_bits() -> None:
    with pytest.raises(ConfigError, match="AUTHSVC_KEK"):
        Sealer(b"short")


def test_repr_hides_the_kek() -> None:
    assert repr(Sealer(KEK)) == "Sealer(kek=<redacted>)"


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_kek_precedence_env_then_file_then_dev_file(tmp_path: Path) -> None:
    kek_file = tmp_path / "kek.txt"
    kek_file.write_text(_text(b"\x02" * 32) + "\n")
    (tmp_path / DEV_KEK_FILENAME).write_text(_text(b"\x03" * 32))
    assert load_kek(Settings(data_dir=tmp_path, kek=_text(b"\x01" * 32), kek_file=kek_file)) == (
        b"\x01" * 32
    )
    assert load_kek(Settings(data_dir=tmp_path, kek_file=kek_file)) == b"\x02" * 32
    assert load_kek(Settings(data_dir=tmp_path)) == b"\x03" * 32


@pytest.mark.parametrize(
    ("kek", "variable"),
    [
        pytest.param("not base64 at all!", "AUTHSVC_KEK", id="not-base64"),
        pytest.param(_text(b"\x01" * 16), "AUTHSVC_KEK", id="128-bits"),
        pytest.param(_text(b"\x01" * 33), "AUTHSVC_KEK", id="264-bits"),
    ],
)
def test_bad_kek_names_the_variable(tmp_path: Path, kek: str, variable: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}"):
        load_kek(Settings(data_dir=tmp_path, kek=kek))


def test_unreadable_kek_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^AUTHSVC_KEK_FILE"):
        load_kek(Settings(data_dir=tmp_path, kek_file=tmp_path / "missing"))


def test_no_kek_outside_dev_mode_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^AUTHSVC_KEK: no key-encryption key") as refused:
        load_kek(Settings(data_dir=tmp_path))
    assert not (tmp_path / DEV_KEK_FILENAME).exists()
    # Run from another folder than `make run` was, the CLI looked for the dev key in the wrong
    # place: the message says where it looked and how to point it at the right one.
    assert str(tmp_path / DEV_KEK_FILENAME) in str(refused.value)
    assert "AUTHSVC_DATA_DIR" in str(refused.value)


def test_dev_mode_generates_a_private_kek_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_kek(Settings(data_dir=data_dir, dev=True))
    path = data_dir / DEV_KEK_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_kek(Settings(data_dir=data_dir, dev=True)) == first
    assert len(first) == 32


def test_new_kek_text_is_accepted() -> None:
    assert len(load_kek(Settings(kek=new_kek_text()))) == 32
