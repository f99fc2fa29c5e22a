"""Who is calling the token, revocation and introspection endpoints (RFC 6749 §2.3).

Parsing is pure: `client_credentials_from` reads the Authorization header and the form and says
which method the client used. Checking the secret is authsvc's job (`AuthenticateClient`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final
from urllib.parse import unquote_plus

from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc_gateway.backend import AuthorityBackend
from authsvc_gateway.errors import InvalidClient, InvalidRequest
from authsvc_gateway.forms import Params

#: The challenge sent with invalid_client when HTTP Basic was (or could have been) used.
BASIC_CHALLENGE: Final = 'Basic realm="authsvc", charset="UTF-8"'
#: Longer than any client id or secret authsvc issues; keeps junk away from authsvc.
_MAX_CREDENTIAL_CHARS: Final = 512


class AuthMethod(StrEnum):
    """RFC 8414 / RFC 7591 names of the client authentication methods the gateway accepts."""

    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 (a method name, not a secret)
    CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105 (a method name, not a secret)
    #: A public client (RFC 6749 §2.1) names itself with `client_id` and proves nothing.
    NONE = "none"


@dataclass(frozen=True)
class ClientCredentials:
    """A client id with the secret it presented ("" for a public client) and how it sent them."""

    client_id: str
    client_secret: str = field(repr=False)
    method: AuthMethod


def client_credentials_from(authorization: str | None, form: Params) -> ClientCredentials:
    """The client credentials of a request, by exactly one method (RFC 6749 §2.3).

    HTTP Basic credentials are the form-urlencoded id and secret (RFC 6749 §2.3.1). Sending a
    secret both ways, or an id in the body that differs from the header's, is invalid_request;
    a malformed or non-Basic Authorization header, or no client id at all, is invalid_client.
    """
    body_id = form.single("client_id")
    body_secret = form.single("client_secret")
    if authorization is not None:
        client_id, secret = _basic_credentials(authorization)
        if body_secret is not None:
            raise InvalidRequest("use one client authentication method, not two")
        if body_id is not None and body_id != client_id:
            raise InvalidRequest("client_id does not match the Authorization header")
        return ClientCredentials(client_id, secret, AuthMethod.CLIENT_SECRET_BASIC)
    if body_id is None:
        raise InvalidClient("client authentication is required")
    _check_length(body_id, body_secret or "")
    if body_secret is not None:
        return ClientCredentials(body_id, body_secret, AuthMethod.CLIENT_SECRET_POST)
    return ClientCredentials(body_id, "", AuthMethod.NONE)


def challenge_for(authorization: str | None, form: Params) -> str | None:
    """The WWW-Authenticate challenge to send with invalid_client (RFC 6749 §5.2).

    Required when the client tried the Authorization header; also sent when it offered no
    credentials at all, to say which scheme works. A client that failed with client_secret_post
    or as a public client gets none, so a browser never pops up a password dialog.
    """
    if authorization is not None or form.count("client_id") == 0:
        return BASIC_CHALLENGE
    return None


async def authenticate(
    backend: AuthorityBackend, credentials: ClientCredentials, *, allow_public: bool = True
) -> pb.Client:
    """The registered client behind `credentials`, checked by authsvc; invalid_client otherwise.

    With `allow_public=False` (introspection, RFC 7662 §2.1) a request that names a client without
    a secret is refused before authsvc is asked, and a public client that sent an empty secret
    gets the same refusal as a wrong secret: neither answer tells whether the id is registered.
    """
    if credentials.method is AuthMethod.NONE and not allow_public:
        raise InvalidClient("this endpoint needs a confidential client's id and secret")
    client = await backend.authenticate_client(
        pb.AuthenticateClientRequest(
            client_id=credentials.client_id, client_secret=credentials.client_secret
        )
    )
    if credentials.method is AuthMethod.NONE and not client.public:
        raise InvalidClient("client authentication failed")
    if client.public and not allow_public:
        raise InvalidClient("client authentication failed")
    return client


def _basic_credentials(authorization: str) -> tuple[str, str]:
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("only HTTP Basic client authentication is supported")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise InvalidClient("malformed HTTP Basic credentials") from exc
    raw_id, sep, raw_secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed HTTP Basic credentials")
    try:
        client_id = unquote_plus(raw_id, errors="strict")
        secret = unquote_plus(raw_secret, errors="strict")
    except ValueError as exc:
        raise InvalidClient("malformed HTTP Basic credentials") from exc
    if not client_id or "\x00" in client_id or "\x00" in secret:
        raise InvalidClient("malformed HTTP Basic credentials")
    _check_length(client_id, secret)
    return client_id, secret


def _check_length(client_id: str, secret: str) -> None:
    if len(client_id) > _MAX_CREDENTIAL_CHARS or len(secret) > _MAX_CREDENTIAL_CHARS:
        raise InvalidClient("client authentication failed")
