"""Users who log in through the gateway: argon2id passwords (see `authsvc.passwords`), checked
only within the failed-login limits (see `authsvc.login_limits`)."""

from __future__ import annotations

from dataclasses import dataclass

from authsvc import login_limits
from authsvc.context import AuthorityContext, new_id
from authsvc.errors import InvalidGrant, InvalidRequest, TooManyAttempts
from authsvc.login_limits import Blocked, LimitKey
from authsvc.storage.records import UserRecord
from authsvc.storage.sql import Tx, retry_conflicts

MAX_PASSWORD = 1024  # argon2 takes any length; this bounds the work one request can ask for


@dataclass(frozen=True)
class Authentication:
    """A user who proved their password: who, and when (by authsvc's clock, which also dates
    revocations, so that a revocation after it can end it: `authorization_codes.create_code`)."""

    subject: str
    authenticated_at: float


async def create_user(ctx: AuthorityContext, username: str, password: str) -> str:
    """Register a user; their subject identifier."""
    if not username or len(username) > 200:
        raise InvalidRequest("username is required (at most 200 characters)")
    if len(password) < 8 or len(password) > MAX_PASSWORD:
        raise InvalidRequest(f"password must be 8 to {MAX_PASSWORD} characters")
    password_hash = await ctx.passwords.hash(password)
    user = UserRecord(new_id(), username, ctx.clock.now(), password_hash)
    async with ctx.store.transaction() as tx:
        if await tx.get_user(username) is not None:
            raise InvalidRequest("username already taken")
        await tx.insert_user(user)
        await tx.append_audit("user_created", user.created_at, subject=user.subject)
    return user.subject


async def authenticate_user(
    ctx: AuthorityContext, username: str, password: str, *, client_ip: str = ""
) -> Authentication:
    """The user whose password this is, as of the attempt's start; one generic InvalidGrant
    otherwise.

    Too many recent failures for the account or for `client_ip` (every replica counts into the
    same rows) answer TooManyAttempts before any argon2 work, for unknown users the same as for
    known ones. Otherwise the attempt is counted as a failure before the password is checked, so
    guesses sent in parallel cannot all pass the limit, and a correct password takes it back.

    The two transactions are retried one by one after a conflict, never the whole login: the
    first has committed the attempt counted in advance, so running it again would count it twice
    (and a correct password could end in TooManyAttempts).
    """
    if len(password) > MAX_PASSWORD or len(username) > 200:
        raise InvalidGrant("invalid credentials")
    keys = [
        key
        for key in login_limits.login_keys(ctx.login_key, ctx.login_policy, username, client_ip)
        if key is not None
    ]
    now = ctx.clock.now()
    user = await retry_conflicts(lambda: _count_attempt(ctx, keys, username, now))
    result = await ctx.passwords.check(password, user.password_hash if user else None)
    if user is None or not result.ok:
        raise InvalidGrant("invalid credentials")
    await retry_conflicts(lambda: _take_back(ctx, keys, user, result.new_hash, now))
    # Dated from the start: a revocation while the password was checked ends this login too.
    return Authentication(user.subject, now)


async def _count_attempt(
    ctx: AuthorityContext, keys: list[LimitKey], username: str, now: float
) -> UserRecord | None:
    """Refuse the attempt if a key is over its limit; otherwise count it as a failure in
    advance. The user, if there is one by that name."""
    async with ctx.store.transaction() as tx:
        failures = await tx.lock_login_failures([key.digest for key in keys], now)
        verdict = login_limits.decide_all(((failures[k.digest], k.policy) for k in keys), now)
        if isinstance(verdict, Blocked):
            raise TooManyAttempts(verdict.retry_after)
        for key in keys:
            counted = login_limits.with_failure(failures[key.digest], now, key.policy)
            await _set_failures(tx, key, counted, now)
        return await tx.get_user(username)


async def _take_back(
    ctx: AuthorityContext, keys: list[LimitKey], user: UserRecord, new_hash: str | None, now: float
) -> None:
    """A correct password: the account's failures go (today's behaviour), the IP keeps all but
    this attempt's; a hash from weaker parameters is replaced."""
    async with ctx.store.transaction() as tx:
        failures = await tx.lock_login_failures([key.digest for key in keys], now)
        account, *ip = keys
        await tx.forget_login_failures(account.digest)
        for key in ip:
            await _set_failures(
                tx, key, login_limits.without_failure(failures[key.digest], now), now
            )
        if new_hash is not None:
            await tx.set_password_hash(user.subject, new_hash)


async def _set_failures(tx: Tx, key: LimitKey, failures: tuple[float, ...], now: float) -> None:
    await tx.set_login_failures(
        key.digest, failures, login_limits.expires_at(failures, key.policy, now)
    )
