"""The authorization request (RFC 6749 §4.1.1 with RFC 7636 PKCE), decided by pure functions.

`decide` turns the parameters of `GET /oauth/authorize` and the client's registration into one of
three outcomes: a valid `AuthorizationRequest`, an `ErrorRedirect` back to the client, or an
`ErrorPage`. Errors go back to the client only through a redirect URI that was sent exactly once
and is registered for the client character for character (RFC 9700 §4.1.3, OAuth 2.1 §4.1.2.1),
or, when none was sent, to the one URI a client registered (OAuth 2.1 §4.1.1, unless it is a
loopback one); anything else is an error page, so the endpoint is never an open redirect.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlencode

from authsvc_client import implied_redirect_uri, redirect_uri_allowed, redirect_uri_registered
from authsvc_client.v1 import authsvc_pb2 as pb

from authsvc_gateway.errors import (
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    OAuthError,
    ServerError,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from authsvc_gateway.forms import Params

S256: Final = "S256"
# RFC 7636 §4.2: BASE64URL(SHA256(verifier)) without padding is always 43 characters.
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


@dataclass(frozen=True)
class AuthorizationRequest:
    """A request that may proceed to login: every parameter checked against the client.

    `redirect_uri` is where the response goes; `redirect_uri_sent` whether the request named it,
    which the token request must then repeat (OAuth 2.1 §4.1.3). `resource` is the audiences the
    code's tokens are for (RFC 8707 §2.1), none meaning the client's defaults.
    """

    client_id: str
    redirect_uri: str
    scope: tuple[str, ...]
    state: str | None
    code_challenge: str
    redirect_uri_sent: bool = True
    resource: tuple[str, ...] = ()

    def fields(self) -> dict[str, str]:
        """The parameters to carry through the login form, as `decide` reads them back."""
        carried = {
            "client_id": self.client_id,
            "response_type": "code",
            "code_challenge": self.code_challenge,
            "code_challenge_method": S256,
            "scope": " ".join(self.scope),
        }
        if self.redirect_uri_sent:
            carried["redirect_uri"] = self.redirect_uri
        if self.state is not None:
            carried["state"] = self.state
        if self.resource:
            # One field, as `requested_resource` reads it back: no resource holds a space.
            carried["resource"] = " ".join(self.resource)
        return carried


@dataclass(frozen=True)
class ErrorRedirect:
    """Send `error` back to the client's (verified) redirect URI, with its `state`."""

    redirect_uri: str
    error: OAuthError
    state: str | None


@dataclass(frozen=True)
class ErrorPage:
    """Show `error` to the user: there is no redirect URI it may safely go to."""

    error: OAuthError


Decision = AuthorizationRequest | ErrorRedirect | ErrorPage


def verified_redirect_uri(client: pb.Client, params: Params) -> str | None:
    """The redirect URI the response may go to, or None when there is none.

    When sent, it must be sent once and equal a URI registered for the client exactly: no prefix,
    wildcard or case leniency, and a different port only for a loopback IP literal over http
    (`redirect_uri_registered`: OAuth 2.1 §2.3.1, RFC 8252 §7.3, RFC 9700 §4.1.3). It may be left
    out only by a client that registered exactly one, not a loopback one, which is then the one
    (`implied_redirect_uri`: OAuth 2.1 §4.1.1).
    """
    sent = params.count("redirect_uri")
    if sent == 0:
        return implied_redirect_uri(client.redirect_uris)
    if sent != 1:
        return None
    uri = params.single("redirect_uri")
    registered = uri is not None and redirect_uri_registered(client.redirect_uris, uri)
    return uri if registered else None


def still_registered(client: pb.Client, request: AuthorizationRequest) -> bool:
    """Whether the response to `request`, checked against `client` some time ago (a consent
    ticket lives ten minutes), may still go to its redirect URI: the registration may have
    changed since, and a response goes only to a URI registered now (RFC 6749 §4.1.2.1)."""
    return redirect_uri_allowed(
        client.redirect_uris, request.redirect_uri, sent=request.redirect_uri_sent
    )


def decide(params: Params, client: pb.Client) -> Decision:
    """What to do with an authorization request from `client` (RFC 6749 §4.1.1, §4.1.2.1)."""
    if params.count("client_id") != 1 or params.single("client_id") != client.client_id:
        return ErrorPage(InvalidRequest("client_id is missing, repeated or unknown"))
    redirect_uri = verified_redirect_uri(client, params)
    if redirect_uri is None:
        return ErrorPage(
            InvalidRequest("redirect_uri is missing, repeated or not registered for this client")
        )
    states = params.values.get("state", ())
    state = states[0] if len(states) == 1 and states[0] else None
    try:
        request = _checked(params, client, redirect_uri, state)
    except OAuthError as error:
        return ErrorRedirect(redirect_uri, error, state)
    return request


def parse_scope(raw: str | None) -> tuple[str, ...]:
    """The scope tokens of a `scope` parameter (RFC 6749 §3.3), without duplicates."""
    scope = tuple(dict.fromkeys(token for token in (raw or "").split(" ") if token))
    for token in scope:
        if not _SCOPE_TOKEN.fullmatch(token):
            raise InvalidScope("scope is malformed")
    return scope


def requested_scope(raw: str | None, client: pb.Client) -> tuple[str, ...]:
    """The scopes asked for, each one the client is registered for."""
    scope = parse_scope(raw)
    for token in scope:
        if token not in client.scopes:
            raise InvalidScope(f"scope {token} is not allowed for this client")
    return scope


def requested_resource(values: Iterable[str], client: pb.Client) -> tuple[str, ...]:
    """The resources asked for (RFC 8707 §2), each one the client may have tokens for.

    A resource here is an audience registered for the client, matched exactly: the rule the
    token endpoint's `resource` and authsvc's CreateAuthorizationCode apply, so nothing is
    refused here that they would grant, nor the reverse. A fragment is refused (§2 forbids it).
    A value with spaces (the login form carries them so) counts as one resource per word, as
    authsvc counts audiences.
    """
    resource = tuple(dict.fromkeys(word for value in values for word in value.split(" ") if word))
    for target in resource:
        if "#" in target:
            raise InvalidTarget(
                f"resource {target} carries a fragment, which RFC 8707 section 2 forbids"
            )
        if target not in client.audiences:
            raise InvalidTarget(f"resource {target} is not allowed for this client")
    return resource


def response_url(redirect_uri: str, parameters: Mapping[str, str]) -> str:
    """`redirect_uri` with `parameters` added to its query, keeping its own (RFC 6749 §3.1.2).

    The rest of the URI stays as registered, character for character: taken apart and put back
    together by `urllib`, a private-use scheme's `com.example.app:///cb` (RFC 8252 §7.1) came
    back as `com.example.app:/cb`. A redirect URI carries no fragment (registration refuses
    one), so its query, if any, is its end."""
    if "#" in redirect_uri:
        raise ValueError("a redirect URI carries no fragment")
    added = urlencode(parameters, quote_via=quote)
    _, question, query = redirect_uri.partition("?")
    if not question:
        return f"{redirect_uri}?{added}"
    return f"{redirect_uri}&{added}" if query else f"{redirect_uri}{added}"


def error_response_url(redirect: ErrorRedirect, issuer: str) -> str:
    """Where an authorization error goes: RFC 6749 §4.1.2.1 plus `iss` (RFC 9207)."""
    parameters = {"error": redirect.error.error}
    if redirect.error.description:
        parameters["error_description"] = redirect.error.description
    if redirect.state is not None:
        parameters["state"] = redirect.state
    parameters["iss"] = issuer
    return response_url(redirect.redirect_uri, parameters)


#: RFC 6749 §4.1.2.1 (and RFC 8707 §2): the only codes an authorization error response carries.
REDIRECTED_ERRORS: Final = frozenset(
    {
        "invalid_request",
        "unauthorized_client",
        "access_denied",
        "unsupported_response_type",
        "invalid_scope",
        "invalid_target",  # RFC 8707 §2, registered for the authorization endpoint too
        "server_error",
        "temporarily_unavailable",
    }
)


def redirected_error(error: OAuthError) -> OAuthError | None:
    """What goes back to the client for an error raised after the request was checked (authsvc
    refusing the code): the error itself if §4.1.2.1 has its code, server_error if not, and None
    for an invalid client (disabled meanwhile, say), which §4.1.2.1 says is never redirected to
    but shown to the user."""
    if error.error == "invalid_client":
        return None
    if error.error in REDIRECTED_ERRORS:
        return error
    return ServerError("the authorization could not be completed")


def _checked(
    params: Params, client: pb.Client, redirect_uri: str, state: str | None
) -> AuthorizationRequest:
    repeated = params.repeated()
    if repeated:
        raise InvalidRequest(f"parameter {repeated[0]} is repeated")
    response_type = params.single("response_type")
    if response_type is None:
        raise InvalidRequest("response_type is required")
    if response_type != "code":
        raise UnsupportedResponseType("only response_type=code is supported")
    if "authorization_code" not in client.grant_types:
        raise UnauthorizedClient("this client may not use the authorization code flow")
    challenge = params.single("code_challenge")
    if challenge is None:
        raise InvalidRequest("code_challenge is required (PKCE, RFC 7636)")
    # RFC 7636 §4.3: a missing method means "plain", which OAuth 2.1 §7.5.2 lets us refuse.
    if params.single("code_challenge_method") != S256:
        raise InvalidRequest("code_challenge_method must be S256")
    if not _CHALLENGE.fullmatch(challenge):
        raise InvalidRequest("code_challenge must be 43 base64url characters (RFC 7636 §4.2)")
    scope = requested_scope(params.single("scope"), client)
    resource = requested_resource(params.every("resource"), client)
    return AuthorizationRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        scope=scope,
        state=state,
        code_challenge=challenge,
        redirect_uri_sent=params.count("redirect_uri") == 1,
        resource=resource,
    )
