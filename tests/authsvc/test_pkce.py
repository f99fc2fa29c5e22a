"""PKCE S256 (RFC 7636): the Appendix B vector, and every verifier and challenge we refuse."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from authsvc import pkce

VECTOR = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "rfc7636_appendix_b.json").read_text()
)


def _b64url(octets: list[int]) -> str:
    return base64.urlsafe_b64encode(bytes(octets)).rstrip(b"=").decode()


def test_appendix_b_vector_is_self_consistent() -> None:
    # The fixture's text forms are the base64url of its octets, as the RFC prints them.
    assert _b64url(VECTOR["code_verifier_octets"]) == VECTOR["code_verifier"]
    assert _b64url(VECTOR["code_challenge_octets"]) == VECTOR["code_challenge"]


def test_s256_of_appendix_b_verifier_is_its_challenge() -> None:
    assert pkce.s256(VECTOR["code_verifier"]) == VECTOR["code_challenge"]


def test_appendix_b_verifier_matches_its_challenge() -> None:
    assert pkce.verifier_matches(VECTOR["code_verifier"], VECTOR["code_challenge"])


def test_only_s256_is_supported() -> None:
    assert pkce.SUPPORTED_METHODS == ("S256",)


UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


@pytest.mark.parametrize(
    ("verifier", "valid"),
    [
        pytest.param("a" * 43, True, id="43-chars-minimum"),
        pytest.param("a" * 128, True, id="128-chars-maximum"),
        pytest.param(UNRESERVED, True, id="every-unreserved-char"),
        pytest.param("a" * 42, False, id="42-chars-too-short"),
        pytest.param("a" * 129, False, id="129-chars-too-long"),
        pytest.param("", False, id="empty"),
        pytest.param("a" * 42 + "+", False, id="plus-not-unreserved"),
        pytest.param("a" * 42 + "/", False, id="slash-not-unreserved"),
        pytest.param("a" * 42 + "=", False, id="padding-not-unreserved"),
        pytest.param("a" * 42 + " ", False, id="space"),
        pytest.param("a" * 42 + "é", False, id="non-ascii"),
        pytest.param("a" * 43 + "\n", False, id="trailing-newline"),
    ],
)
def test_verifier_shape(verifier: str, valid: bool) -> None:
    assert pkce.is_valid_verifier(verifier) is valid


@pytest.mark.parametrize(
    ("challenge", "valid"),
    [
        pytest.param(VECTOR["code_challenge"], True, id="appendix-b"),
        pytest.param(VECTOR["code_challenge"][:-1], False, id="42-chars"),
        pytest.param(VECTOR["code_challenge"] + "A", False, id="44-chars"),
        pytest.param(VECTOR["code_challenge"] + "=", False, id="padded"),
        pytest.param(VECTOR["code_challenge"][:-1] + ".", False, id="dot-not-base64url"),
        pytest.param(VECTOR["code_challenge"][:-1] + "+", False, id="plus-is-base64-not-url"),
        pytest.param(VECTOR["code_verifier"] + "x" * 10, False, id="plain-verifier"),
        pytest.param("", False, id="empty"),
    ],
)
def test_challenge_shape(challenge: str, valid: bool) -> None:
    assert pkce.is_valid_challenge(challenge) is valid


@pytest.mark.parametrize(
    ("verifier", "challenge"),
    [
        pytest.param(
            VECTOR["code_verifier"][:-1] + "l", VECTOR["code_challenge"], id="other-verifier"
        ),
        pytest.param(VECTOR["code_verifier"], VECTOR["code_verifier"], id="plain-method-attempt"),
        pytest.param("a" * 42, pkce.s256("a" * 42), id="verifier-too-short"),
        pytest.param("", pkce.s256(""), id="empty-verifier"),
        pytest.param("a" * 129, pkce.s256("a" * 129), id="verifier-too-long"),
    ],
)
def test_verifier_mismatch(verifier: str, challenge: str) -> None:
    assert not pkce.verifier_matches(verifier, challenge)
