"""Users who log in through the gateway: argon2id passwords (see `authsvc.passwords`)."""

from __future__ import annotations

from authsvc.context import AuthorityContext, new_id
from authsvc.errors import InvalidGrant, InvalidRequest
from authsvc.storage.records import UserRecord

MAX_PASSWORD = 1024  # argon2 takes any length; this bounds the work one request can ask for


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


async def authenticate_user(ctx: AuthorityContext, username: str, password: str) -> str:
    """The subject of the user whose password this is; one generic InvalidGrant otherwise."""
    if len(password) > MAX_PASSWORD or len(username) > 200:
        raise InvalidGrant("invalid credentials")
    async with ctx.store.transaction(readonly=True) as tx:
        user = await tx.get_user(username)
    result = await ctx.passwords.check(password, user.password_hash if user else None)
    if user is None or not result.ok:
        raise InvalidGrant("invalid credentials")
    if result.new_hash is not None:
        async with ctx.store.transaction() as tx:
            await tx.set_password_hash(user.subject, result.new_hash)
    return user.subject
