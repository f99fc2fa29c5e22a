"""Carrying out a key rotation plan: under a lock, so exactly one replica rotates at a time."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from authsvc.context import AuthorityContext, append_events
from authsvc.keys import material
from authsvc.keys.ring import ACTIVE, PENDING, PURGED, RETIRED, plan_rotation
from authsvc.storage.records import KeyRecord, RevocationEventRecord
from authsvc.storage.sql import KEY_ROTATION_LOCK

log = logging.getLogger(__name__)

KEY_EVENT_RETENTION = 86400  # key events only tell verifiers to refetch; a day is plenty


@dataclass(frozen=True)
class RotationResult:
    published_kid: str
    active_kid: str
    changed: bool


def _key_event(kid: str, state: str, at: float) -> RevocationEventRecord:
    return RevocationEventRecord(
        cursor=0,
        occurred_at=at,
        expires_at=at + KEY_EVENT_RETENTION,
        kind="key",
        value=kid,
        state=state,
    )


async def rotate_keys(
    ctx: AuthorityContext,
    *,
    due: bool = False,
    immediate: bool = False,
    compromised: bool = False,
    wait: bool = True,
) -> RotationResult | None:
    """Apply `plan_rotation` to the stored ring and reload it. None if another replica holds the
    lock and `wait` is False."""
    now = ctx.clock.now()
    events: list[RevocationEventRecord] = []
    async with ctx.store.transaction() as tx:
        if wait:
            await tx.lock(KEY_ROTATION_LOCK)
        elif not await tx.try_lock(KEY_ROTATION_LOCK):
            return None
        keys = await tx.list_keys()
        plan = plan_rotation(
            keys, now, ctx.key_policy, due=due, immediate=immediate, compromised=compromised
        )
        activate = plan.activate
        published = ""
        if plan.publish_new or (not keys):
            new = material.generate(ctx.settings.signing_algorithm)
            published = new.kid
            await tx.insert_key(
                KeyRecord(
                    kid=new.kid,
                    alg=new.alg,
                    state=PENDING,
                    public_jwk=new.public_jwk,
                    published_at=now,
                    activated_at=None,
                    retired_at=None,
                    sealed_private=ctx.sealer.seal(new.kid, new.private_pem),
                )
            )
            events.append(_key_event(new.kid, PENDING, now))
            if not keys:
                activate = new.kid  # an empty ring signs at once: nobody can have cached it
        if activate is not None:
            await tx.set_key_state(activate, ACTIVE, now)
            events.append(_key_event(activate, ACTIVE, now))
        for kid in plan.retire:
            await tx.set_key_state(kid, RETIRED, now)
            events.append(_key_event(kid, RETIRED, now))
        for kid in plan.purge:
            await tx.delete_key(kid)
            events.append(_key_event(kid, PURGED, now))
        if not keys and plan.publish_new:
            # Bootstrap: also publish the next key, so a pending key is always waiting.
            nxt = material.generate(ctx.settings.signing_algorithm)
            await tx.insert_key(
                KeyRecord(
                    nxt.kid,
                    nxt.alg,
                    PENDING,
                    nxt.public_jwk,
                    now,
                    None,
                    None,
                    ctx.sealer.seal(nxt.kid, nxt.private_pem),
                )
            )
            events.append(_key_event(nxt.kid, PENDING, now))
            published = nxt.kid
        stored = await append_events(tx, events) if events else []
    await reload_keys(ctx)
    if stored:
        ctx.feed.published(stored)
        log.info("key ring changed", extra={"changes": [(e.value, e.state) for e in stored]})
    active = ctx.key_ring.signer.kid
    pending = [r.kid for r in ctx.key_ring.records if r.state == PENDING]
    return RotationResult(published or (pending[-1] if pending else ""), active, bool(stored))


async def reload_keys(ctx: AuthorityContext) -> None:
    """Rebuild the in-memory ring from storage (after a key event from any replica, or a
    rotation here).

    Reloads take turns, and each reads the keys once it has its turn: one that read them before
    another transaction committed must not load them after a reload that read the newer ones.
    (The feed's reload for one rotation's events, finishing after the next rotation's own,
    put keys that rotation had purged back into the ring until the next key event.)
    """
    async with ctx.key_reloads:
        async with ctx.store.transaction(readonly=True) as tx:
            records = await tx.list_keys()
        before = set(ctx.key_ring.verification_keys)
        ctx.key_ring.load(records)
        if before - set(ctx.key_ring.verification_keys):
            ctx.on_keys_purged()
