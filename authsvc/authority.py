"""The token authority as one object: what the gRPC servicers, the gateway, the CLI and the
benchmarks call. No transport here; each method delegates to the module of its protocol concern.

Each method that touches the database is one unit of work: when PostgreSQL rolls a transaction back
to break a deadlock or a serialization conflict, the whole method runs again (`retry_conflicts`), so
the caller sees its answer, or after a bounded number of attempts temporarily_unavailable, and
never an internal error. Re-running is safe because nothing leaves a method (an event published, a
token minted) before its transaction commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from authsvc import (
    authorization_codes,
    client_registry,
    introspection,
    issuance,
    maintenance,
    revocation,
    rotation,
    users,
)
from authsvc.authenticated_clients import AuthenticatedClients
from authsvc.clock import Clock, SystemClock
from authsvc.config import ConfigError, Settings
from authsvc.context import AuthorityContext
from authsvc.events import RevocationFeed, Subscription
from authsvc.health import DatabaseHealth
from authsvc.keys.derivation import LOGIN_LIMITS, REFRESH_GRACE, derive_key
from authsvc.keys.ring import KeyRing
from authsvc.keys.rotation import RotationResult, reload_keys, rotate_keys
from authsvc.keys.sealing import Sealer, UnsealError, load_kek
from authsvc.passwords import Argon2Parameters, Passwords
from authsvc.revocation_state import RevocationState
from authsvc.storage import migrate
from authsvc.storage.engine import create_engine
from authsvc.storage.notifications import EventNotifications
from authsvc.storage.records import ClientRecord, FamilyRecord
from authsvc.storage.sql import SqlStore, database_errors, retry_conflicts
from authsvc.tokens.access import AccessClaims
from authsvc.verification import Verifier

log = logging.getLogger(__name__)

MigratePolicy = Literal["if-empty", "always", "never"]
P = ParamSpec("P")
R = TypeVar("R")


def _unit_of_work(
    method: Callable[Concatenate[Authority, P], Awaitable[R]],
) -> Callable[Concatenate[Authority, P], Awaitable[R]]:
    """Run the method again, whole, when the database rolled its transaction back (a conflict)."""

    @functools.wraps(method)
    async def run(self: Authority, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await retry_conflicts(lambda: method(self, *args, **kwargs))

    return run


def _to_completion(
    method: Callable[Concatenate[Authority, P], Awaitable[R]],
) -> Callable[Concatenate[Authority, P], Awaitable[R]]:
    """Run the method to its end even when its caller is cancelled (a deadline passed, the
    client went away); the cancellation still reaches the caller at once.

    For the bulk revocations. On SQLite their transaction runs on the driver's thread, and one
    cut off inside a statement leaves the abandoned cursor holding the database's write lock
    until the garbage collector frees it: every write, every other revocation among them, then
    waits out the busy timeout and fails. And a revocation that was asked for is better done
    than dropped. `Authority.close()` waits for the ones still running.
    """

    @functools.wraps(method)
    async def run(self: Authority, /, *args: P.args, **kwargs: P.kwargs) -> R:
        task = asyncio.ensure_future(method(self, *args, **kwargs))
        self._completing.add(task)
        task.add_done_callback(self._completing.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_failure_nobody_awaits)
            raise

    return run


def _log_failure_nobody_awaits(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("work whose caller had gone failed: %r", exc, exc_info=exc)


class Authority:
    """The domain facade. Build it with `open_authority`; close it with `close()`."""

    def __init__(self, ctx: AuthorityContext) -> None:
        self.ctx = ctx
        self.verifier = Verifier(ctx)
        ctx.key_purge_listeners.append(self.verifier.forget_keys)
        self.health = DatabaseHealth(
            ctx.store,
            interval=ctx.settings.health_probe_interval,
            timeout=ctx.settings.health_probe_timeout,
        )
        self._maintenance: asyncio.Task[None] | None = None
        self._completing: set[asyncio.Future[Any]] = set()  # see `_to_completion`

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    # tokens

    @_unit_of_work
    async def issue_token_pair(
        self,
        *,
        subject: str,
        client_id: str,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
        device_id: str = "",
    ) -> issuance.IssuedTokenPair:
        return await issuance.issue_token_pair(
            self.ctx,
            subject=subject,
            client_id=client_id,
            scope=scope,
            audience=audience,
            device_id=device_id,
        )

    @_unit_of_work
    async def rotate(
        self, refresh_token: str, *, client_id: str = "", scope: Sequence[str] = ()
    ) -> issuance.IssuedTokenPair:
        return await rotation.rotate(self.ctx, refresh_token, client_id=client_id, scope=scope)

    def verify(
        self, token: str, *, audience: str | None, required_scopes: Sequence[str] = ()
    ) -> AccessClaims:
        return self.verifier.verify(token, audience=audience, required_scopes=required_scopes)

    @_unit_of_work
    async def introspect(self, token: str, *, client_id: str = "") -> introspection.Introspection:
        return await introspection.introspect(self.ctx, self.verifier, token, client_id=client_id)

    @_unit_of_work
    async def client_credentials(
        self,
        *,
        client_id: str,
        client_secret: str,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
    ) -> issuance.IssuedAccessToken:
        return await issuance.client_credentials(
            self.ctx,
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
            audience=audience,
        )

    # revocation

    @_unit_of_work
    async def revoke_family(self, family_id: str, *, reason: str = "") -> bool:
        return await revocation.revoke_family(self.ctx, family_id, reason=reason)

    @_unit_of_work
    async def revoke(self, token: str, *, client_id: str = "", token_type_hint: str = "") -> None:
        await revocation.revoke_token(
            self.ctx, token, client_id=client_id, token_type_hint=token_type_hint
        )

    @_to_completion
    @_unit_of_work
    async def revoke_subject(self, subject: str, *, reason: str = "") -> int:
        return await revocation.revoke_subject(self.ctx, subject, reason=reason)

    @_to_completion
    @_unit_of_work
    async def revoke_client(
        self, client_id: str, *, reason: str = "", disable: bool = False
    ) -> int:
        return await client_registry.revoke_client(
            self.ctx, client_id, reason=reason, disable=disable
        )

    @_unit_of_work
    async def list_sessions(self, subject: str) -> list[FamilyRecord]:
        return await revocation.list_sessions(self.ctx, subject)

    def subscribe(
        self, cursor: int, heartbeat: float | None = None, *, stream_id: str = ""
    ) -> AbstractAsyncContextManager[Subscription]:
        """`async with` it for the events after `cursor` of stream `stream_id`; see
        `RevocationFeed.subscribe`."""
        interval = self.settings.heartbeat_interval if heartbeat is None else heartbeat
        return self.ctx.feed.subscribe(cursor, interval, stream_id=stream_id)

    def end_subscriptions(self) -> None:
        """End every subscription cleanly, and any opened later: on shutdown, so verifiers
        resume on another replica at once instead of holding the stop for its whole grace. The
        feed keeps following the table (for the calls still in flight) until `close()`."""
        self.ctx.feed.end_subscriptions()

    # keys

    def publish_keys(self) -> KeyRing:
        return self.ctx.key_ring

    @_unit_of_work
    async def rotate_keys(
        self, *, immediate: bool = False, compromised: bool = False
    ) -> RotationResult:
        result = await rotate_keys(self.ctx, due=True, immediate=immediate, compromised=compromised)
        assert result is not None
        return result

    # clients, users, codes

    @_unit_of_work
    async def create_client(
        self,
        name: str,
        *,
        grant_types: Sequence[str],
        scopes: Sequence[str] = (),
        audiences: Sequence[str] = (),
        redirect_uris: Sequence[str] = (),
        public: bool = False,
        first_party: bool = False,
        client_id: str | None = None,
    ) -> client_registry.RegisteredClient:
        return await client_registry.create_client(
            self.ctx,
            name=name,
            grant_types=grant_types,
            scopes=scopes,
            audiences=audiences,
            redirect_uris=redirect_uris,
            public=public,
            first_party=first_party,
            client_id=client_id,
        )

    @_unit_of_work
    async def authenticate_client(self, client_id: str, client_secret: str) -> ClientRecord:
        return await client_registry.authenticate(self.ctx, client_id, client_secret)

    @_unit_of_work
    async def get_client(self, client_id: str) -> ClientRecord:
        return await client_registry.get_client(self.ctx, client_id)

    @_unit_of_work
    async def list_clients(self) -> list[ClientRecord]:
        return await client_registry.list_clients(self.ctx)

    @_unit_of_work
    async def rotate_client_secret(self, client_id: str) -> client_registry.RegisteredClient:
        return await client_registry.rotate_secret(self.ctx, client_id)

    @_unit_of_work
    async def create_user(self, username: str, password: str) -> str:
        return await users.create_user(self.ctx, username, password)

    # Not a unit of work: `users.authenticate_user` retries each of its transactions itself.
    async def authenticate_user(
        self, username: str, password: str, *, client_ip: str = ""
    ) -> users.Authentication:
        return await users.authenticate_user(self.ctx, username, password, client_ip=client_ip)

    @_unit_of_work
    async def create_authorization_code(
        self,
        *,
        client_id: str,
        redirect_uri: str,
        subject: str,
        code_challenge: str,
        code_challenge_method: str,
        scope: Sequence[str] = (),
        audience: Sequence[str] = (),
        device_id: str = "",
        redirect_uri_omitted: bool = False,
        authenticated_at: float | None = None,
    ) -> authorization_codes.IssuedCode:
        return await authorization_codes.create_code(
            self.ctx,
            client_id=client_id,
            redirect_uri=redirect_uri,
            subject=subject,
            scope=scope,
            audience=audience,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
            device_id=device_id,
            redirect_uri_omitted=redirect_uri_omitted,
            authenticated_at=authenticated_at,
        )

    @_unit_of_work
    async def deny_authorization(
        self, *, client_id: str, subject: str, code_challenge: str
    ) -> None:
        await authorization_codes.deny_request(
            self.ctx, client_id=client_id, subject=subject, code_challenge=code_challenge
        )

    @_unit_of_work
    async def exchange_authorization_code(
        self,
        *,
        client_id: str,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        audience: Sequence[str] = (),
    ) -> issuance.IssuedTokenPair:
        return await authorization_codes.exchange_code(
            self.ctx,
            client_id=client_id,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            audience=audience,
        )

    # life cycle

    @_unit_of_work
    async def run_maintenance(self) -> maintenance.MaintenanceReport:
        return await maintenance.run_once(self.ctx)

    def start_background(self) -> None:
        """Start the maintenance loop (key schedule, purge) and the database health probe; the
        event feed is already running."""
        if self._maintenance is None:
            self._maintenance = asyncio.create_task(
                maintenance.run_forever(self.ctx), name="maintenance"
            )
        self.health.start()

    async def close(self) -> None:
        await self.health.stop()
        if self._completing:
            await asyncio.gather(*self._completing, return_exceptions=True)
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        await self.ctx.feed.stop()
        await self.ctx.store.close()


async def open_authority(
    settings: Settings,
    clock: Clock | None = None,
    *,
    migrate_policy: MigratePolicy = "if-empty",
    password_parameters: Argon2Parameters | None = None,
) -> Authority:
    """Connect, migrate as the policy says, load the key ring (creating the first keys on an empty
    database) and start following revocation events."""
    kek = load_kek(settings)
    store = SqlStore(create_engine(settings))
    try:
        head = migrate.head_revision()
        async with database_errors():
            current = await migrate.current_revision(store.engine)
            if migrate_policy == "always" or (migrate_policy == "if-empty" and current is None):
                await migrate.upgrade_database(store.engine, settings)
                current = head
        if current != head:
            raise ConfigError(
                f"AUTHSVC_DATABASE_URL: schema is at {current or 'nothing'}, this build needs "
                f"{head}; run `authsvc migrate` first"
            )
        clock = clock or SystemClock()
        sealer = Sealer(kek)
        state = RevocationState()
        key_ring = KeyRing(sealer, settings.jwks_max_age)
        ctx_holder: list[AuthorityContext] = []

        async def on_key_change() -> None:
            await reload_keys(ctx_holder[0])

        authenticated_clients = AuthenticatedClients(clock)
        feed = RevocationFeed(
            store,
            state,
            clock,
            poll_interval=settings.revocation_poll_interval,
            on_key_change=on_key_change,
            notifications=None if store.sqlite else EventNotifications(store.engine, settings),
            listeners=[authenticated_clients.forget],
        )
        ctx = AuthorityContext(
            settings=settings,
            store=store,
            clock=clock,
            key_ring=key_ring,
            sealer=sealer,
            revocations=state,
            feed=feed,
            passwords=Passwords(password_parameters),
            authenticated_clients=authenticated_clients,
            grace_key=derive_key(kek, REFRESH_GRACE),
            login_key=derive_key(kek, LOGIN_LIMITS),
        )
        ctx_holder.append(ctx)
        try:
            await reload_keys(ctx)
            if not key_ring.records or not any(r.state == "active" for r in key_ring.records):
                await rotate_keys(ctx)
            await feed.start()  # which reloads the ring again, after its cursor
        except UnsealError as exc:
            raise ConfigError(
                "AUTHSVC_KEK: the signing keys in this database were sealed with another "
                "key-encryption key; every replica (and the CLI) of one deployment needs the same"
            ) from exc
        return Authority(ctx)
    except BaseException:
        await store.close()
        raise
