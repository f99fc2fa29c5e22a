"""The browser side of the code flow: GET /oauth/authorize shows the sign-in page, POST
/oauth/login checks the user, POST /oauth/consent records the user's decision, and each ends in a
redirect to the client with `code`, `state` and `iss` (RFC 6749 §4.1.2, RFC 9207).

Every decision here is made by a pure function elsewhere (`authorization.decide`, `check_csrf`,
`needs_consent`); these handlers only apply them. The failed-login limits are authsvc's, shared by
every replica: the gateway passes on the client IP and shows authsvc's TooManyAttempts as 429.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from authsvc_client.v1 import authsvc_pb2 as pb
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authsvc_gateway import paths
from authsvc_gateway.authorization import (
    S256,
    AuthorizationRequest,
    Decision,
    ErrorPage,
    ErrorRedirect,
    decide,
    error_response_url,
    redirected_error,
    response_url,
    still_registered,
)
from authsvc_gateway.backend import AuthorityBackend
from authsvc_gateway.config import GatewayConfig
from authsvc_gateway.consent import (
    CONSENT_TICKET_LIFETIME,
    bound_to,
    browser_binding,
    needs_consent,
    open_ticket,
    seal_ticket,
)
from authsvc_gateway.csrf import (
    CSRF_FIELD,
    CsrfCookie,
    CsrfVerdict,
    check_csrf,
    csrf_cookie,
    issue_csrf,
)
from authsvc_gateway.errors import (
    AccessDenied,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    OAuthError,
    TemporarilyUnavailable,
    TooManyAttempts,
)
from authsvc_gateway.forms import Params, parse_query, read_form
from authsvc_gateway.pages import (
    INVALID_CREDENTIALS,
    TOO_MANY_ATTEMPTS,
    consent_page,
    error_page,
    login_page,
)

log = logging.getLogger(__name__)

#: Longest username and password passed on to authsvc; longer ones are simply wrong, and a
#: megabyte password must not cost a megabyte of argon2 input.
MAX_USERNAME_CHARS: Final = 256
MAX_PASSWORD_CHARS: Final = 1024
TICKET_FIELD: Final = "ticket"
#: The ticket's copy of `AuthenticateUserResponse.authenticated_at`, in nanoseconds.
AUTHENTICATED_AT: Final = "authenticated_at"
_REDIRECT_HEADERS: Final = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


class AuthorizationEndpoints:
    """GET /oauth/authorize, POST /oauth/login and POST /oauth/consent."""

    def __init__(
        self,
        backend: AuthorityBackend,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = backend
        self._config = config
        self._clock = clock

    async def authorize(self, request: Request) -> Response:
        """Check the authorization request and show the sign-in page (RFC 6749 §4.1.1)."""
        try:
            params = parse_query(request)
        except InvalidRequest as error:
            return error_page(error)
        return await self._decided(request, params, self._show_login)

    async def login(self, request: Request) -> Response:
        """Check the CSRF token, the rate limits and the password, then consent or a code."""
        form_or_page = await self._checked_form(request)
        if isinstance(form_or_page, Response):
            return form_or_page
        return await self._decided(request, form_or_page, self._sign_in)

    async def consent(self, request: Request) -> Response:
        """Apply the user's Allow or Deny to the request sealed in the consent ticket."""
        form_or_page = await self._checked_form(request)
        if isinstance(form_or_page, Response):
            return form_or_page
        payload = open_ticket(
            self._config.session_key,
            form_or_page.single(TICKET_FIELD) or "",
            now=int(self._clock()),
        )
        if payload is not None and not bound_to(payload, self._csrf_nonce(request)):
            log.info("consent ticket refused: shown to another browser")
            payload = None
        sealed = _request_from_ticket(payload) if payload is not None else None
        if sealed is None:
            return error_page(
                InvalidRequest("This consent request has expired. Start again from the app.")
            )
        login, authorization = sealed
        try:
            client = await self._backend.get_client(
                pb.GetClientRequest(client_id=authorization.client_id)
            )
        except TemporarilyUnavailable as error:
            return error_page(error)
        except OAuthError:
            return error_page(InvalidClient("The application is no longer registered."))
        if not still_registered(client, authorization):
            return error_page(
                InvalidRequest("The application's settings changed. Start again from the app.")
            )
        if form_or_page.single("decision") != "allow":
            return await self._deny(authorization, login)
        return await self._issue_code(authorization, login)

    async def _checked_form(self, request: Request) -> Params | Response:
        try:
            form = await read_form(request)
        except InvalidRequest as error:
            return error_page(error)
        verdict = check_csrf(
            self._config.session_key,
            self._csrf_nonce(request),
            form.single(CSRF_FIELD),
        )
        if verdict is not CsrfVerdict.PASSED:
            log.info("login form refused: %s", verdict.value)
            return error_page(
                InvalidRequest("Your session has expired. Go back to the app and try again."),
                status=403,
            )
        return form

    async def _decided(
        self,
        request: Request,
        params: Params,
        proceed: Callable[[Request, Params, AuthorizationRequest, pb.Client], Awaitable[Response]],
    ) -> Response:
        client_id = params.single("client_id") if params.count("client_id") == 1 else None
        if client_id is None:
            return error_page(InvalidRequest("client_id is missing or repeated"))
        try:
            client = await self._backend.get_client(pb.GetClientRequest(client_id=client_id))
        except TemporarilyUnavailable as error:
            return error_page(error)
        except OAuthError:
            return error_page(InvalidRequest("The application is not registered."))
        decision: Decision = decide(params, client)
        if isinstance(decision, ErrorPage):
            return error_page(decision.error)
        if isinstance(decision, ErrorRedirect):
            return self._redirect(error_response_url(decision, self._config.issuer))
        return await proceed(request, params, decision, client)

    async def _show_login(
        self,
        request: Request,
        params: Params,
        authorization: AuthorizationRequest,
        client: pb.Client,
        *,
        username: str = "",
        message: str = "",
        status: int = 200,
        retry_after: int | None = None,
    ) -> Response:
        csrf = issue_csrf(self._config.session_key, self._csrf_nonce(request))
        response = login_page(
            action=self._config.browser_path(paths.LOGIN),
            client_name=client.name or client.client_id,
            fields={**authorization.fields(), CSRF_FIELD: csrf.token},
            username=username,
            message=message,
            status=status,
        )
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        self._set_csrf_cookie(response, csrf.cookie)
        return response

    async def _sign_in(
        self,
        request: Request,
        params: Params,
        authorization: AuthorizationRequest,
        client: pb.Client,
    ) -> Response:
        username = params.single("username") or ""
        password = params.single("password") or ""
        # uvicorn sets this from X-Forwarded-For only for configured proxies (server.py).
        ip = request.client.host if request.client else ""
        try:
            login = await self._authenticate_user(username, password, ip)
        except InvalidGrant:
            return await self._show_login(
                request,
                params,
                authorization,
                client,
                username=username,
                message=INVALID_CREDENTIALS,
            )
        except TooManyAttempts as error:
            return await self._show_login(
                request,
                params,
                authorization,
                client,
                username=username,
                message=TOO_MANY_ATTEMPTS,
                status=429,
                retry_after=error.retry_after or 1,
            )
        except OAuthError as error:
            return error_page(error)
        if needs_consent(client, first_party_skip_consent=self._config.first_party_skip_consent):
            return self._show_consent(request, authorization, client, login)
        return await self._issue_code(authorization, login)

    async def _authenticate_user(
        self, username: str, password: str, ip: str
    ) -> pb.AuthenticateUserResponse:
        if not username or not password:
            raise InvalidGrant("invalid credentials")
        if len(username) > MAX_USERNAME_CHARS or len(password) > MAX_PASSWORD_CHARS:
            raise InvalidGrant("invalid credentials")
        return await self._backend.authenticate_user(
            pb.AuthenticateUserRequest(username=username, password=password, client_ip=ip)
        )

    def _show_consent(
        self,
        request: Request,
        authorization: AuthorizationRequest,
        client: pb.Client,
        login: pb.AuthenticateUserResponse,
    ) -> Response:
        csrf = issue_csrf(self._config.session_key, self._csrf_nonce(request))
        ticket = seal_ticket(
            self._config.session_key,
            {
                **_sealed_login(login),
                "browser": browser_binding(csrf.cookie),
                **authorization.fields(),
                "redirect_uri": authorization.redirect_uri,
                "redirect_uri_sent": authorization.redirect_uri_sent,
            },
            now=int(self._clock()),
            lifetime=CONSENT_TICKET_LIFETIME,
        )
        response = consent_page(
            action=self._config.browser_path(paths.CONSENT),
            client_name=client.name or client.client_id,
            scopes=authorization.scope or tuple(client.scopes),
            fields={TICKET_FIELD: ticket, CSRF_FIELD: csrf.token},
        )
        self._set_csrf_cookie(response, csrf.cookie)
        return response

    async def _issue_code(
        self, authorization: AuthorizationRequest, login: pb.AuthenticateUserResponse
    ) -> Response:
        """A code for `login`, whose time authsvc checks against revocations made since (a
        refusal, like any after the request was checked, goes back to the client)."""
        try:
            code = await self._backend.create_authorization_code(
                pb.CreateAuthorizationCodeRequest(
                    client_id=authorization.client_id,
                    redirect_uri=authorization.redirect_uri,
                    redirect_uri_omitted=not authorization.redirect_uri_sent,
                    subject=login.subject,
                    # Unset when the login carried none (an older authsvc): no check then.
                    authenticated_at=(
                        login.authenticated_at if login.HasField("authenticated_at") else None
                    ),
                    scope=list(authorization.scope),
                    # RFC 8707 §2.1: the code's tokens are for these; none, the client's defaults.
                    audience=list(authorization.resource),
                    code_challenge=authorization.code_challenge,
                    code_challenge_method=S256,
                    # Each authorization starts its own family: one login, one device.
                    device_id=f"web-{secrets.token_hex(8)}",
                )
            )
        except OAuthError as error:
            sent = redirected_error(error)
            if sent is None:
                return error_page(error)
            refused = ErrorRedirect(authorization.redirect_uri, sent, authorization.state)
            return self._redirect(error_response_url(refused, self._config.issuer))
        parameters = {"code": code.code}
        if authorization.state is not None:
            parameters["state"] = authorization.state
        parameters["iss"] = self._config.issuer
        return self._redirect(response_url(authorization.redirect_uri, parameters))

    async def _deny(
        self, authorization: AuthorizationRequest, login: pb.AuthenticateUserResponse
    ) -> Response:
        """Record the user's Deny as the request's answer, then send access_denied to the client
        (RFC 6749 §4.1.2.1). authsvc keeps the answer, so the same page's Allow pressed after
        it (the back button, a second tab, whichever replica it reaches) gets no code. Were the
        denial not recorded (authsvc unreachable), the page says so and the client hears
        nothing yet: the user may press Deny again."""
        try:
            await self._backend.deny_authorization(
                pb.DenyAuthorizationRequest(
                    client_id=authorization.client_id,
                    subject=login.subject,
                    code_challenge=authorization.code_challenge,
                )
            )
        except OAuthError as error:
            return error_page(error)
        denied = ErrorRedirect(
            authorization.redirect_uri,
            AccessDenied("the user denied the request"),
            authorization.state,
        )
        return self._redirect(error_response_url(denied, self._config.issuer))

    def _redirect(self, url: str) -> Response:
        # 303 after a form post, so the browser follows with GET; harmless after a GET.
        return RedirectResponse(url, status_code=303, headers=_REDIRECT_HEADERS)

    def _csrf_nonce(self, request: Request) -> str | None:
        return request.cookies.get(self._csrf_cookie().name)

    def _set_csrf_cookie(self, response: Response, value: str) -> None:
        cookie = self._csrf_cookie()
        # Lax, not Strict: a user arrives from the client's site, a cross-site navigation that
        # carries no Strict cookie, so each arrival would mint a new nonce and break the forms
        # of every other tab. A cross-site POST carries no Lax cookie either, so a forged login
        # or consent is still refused for want of it.
        response.set_cookie(
            cookie.name,
            value,
            path=cookie.path,
            httponly=True,
            samesite="lax",
            secure=self._config.secure_cookies,
        )

    def _csrf_cookie(self) -> CsrfCookie:
        return csrf_cookie(self._config.secure_cookies, self._config.browser_path(""))


def _sealed_login(login: pb.AuthenticateUserResponse) -> dict[str, object]:
    """What a ticket records of `login`: the subject and, in nanoseconds, exactly the time authsvc
    dated it by (which an older authsvc does not give)."""
    sealed: dict[str, object] = {"sub": login.subject}
    if login.HasField("authenticated_at"):
        sealed[AUTHENTICATED_AT] = login.authenticated_at.ToNanoseconds()
    return sealed


def _request_from_ticket(
    payload: Mapping[str, object],
) -> tuple[pb.AuthenticateUserResponse, AuthorizationRequest] | None:
    """The login and request a ticket carries, as `_show_consent` sealed them."""
    fields = {
        name: payload.get(name)
        for name in ("sub", "client_id", "redirect_uri", "code_challenge", "scope")
    }
    state = payload.get("state")
    # Tickets sealed before the gateway accepted a request without one always named it, and
    # those sealed before it read `resource` carry none.
    sent = payload.get("redirect_uri_sent", True)
    resource = payload.get("resource", "")
    # Tickets sealed before logins were dated (or from an older authsvc) carry no time.
    authenticated_at = payload.get(AUTHENTICATED_AT)
    if not all(isinstance(value, str) for value in fields.values()):
        return None
    if (state is not None and not isinstance(state, str)) or not isinstance(sent, bool):
        return None
    if not isinstance(resource, str):
        return None
    if authenticated_at is not None and type(authenticated_at) is not int:
        return None
    values = {name: str(value) for name, value in fields.items()}
    login = pb.AuthenticateUserResponse(subject=values["sub"])
    if authenticated_at is not None:
        login.authenticated_at.FromNanoseconds(authenticated_at)
    return login, AuthorizationRequest(
        client_id=values["client_id"],
        redirect_uri=values["redirect_uri"],
        scope=tuple(values["scope"].split()),
        state=state,
        code_challenge=values["code_challenge"],
        redirect_uri_sent=sent,
        resource=tuple(resource.split()),
    )
