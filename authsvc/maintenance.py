"""Background work: scheduled key rotation, purging expired rows, pruning revocation state.

Each pass is one call (`run_once`) so tests drive it with a moved clock; `run_forever` only repeats
it. With several replicas the database locks make sure one replica rotates keys or purges at a time.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from authsvc.context import AuthorityContext
from authsvc.keys.rotation import rotate_keys
from authsvc.storage.sql import MAINTENANCE_LOCK

log = logging.getLogger(__name__)

AUDIT_RETENTION = 90 * 86400


@dataclass(frozen=True)
class MaintenanceReport:
    keys_changed: bool
    purged: dict[str, int]
    pruned: int


async def run_once(ctx: AuthorityContext) -> MaintenanceReport:
    """One pass. Skips the parts another replica is doing right now."""
    now = ctx.clock.now()
    rotation = await rotate_keys(ctx, wait=False)
    purged: dict[str, int] = {}
    async with ctx.store.transaction(bulk=True) as tx:
        if await tx.try_lock(MAINTENANCE_LOCK):
            purged = await tx.purge_expired(now, AUDIT_RETENTION)
    pruned = ctx.revocations.prune(now)
    if any(purged.values()) or pruned:
        log.info("purged expired rows", extra={"purged": purged, "pruned": pruned})
    return MaintenanceReport(bool(rotation and rotation.changed), purged, pruned)


async def run_forever(ctx: AuthorityContext) -> None:
    """Repeat `run_once` every `maintenance_interval` seconds until cancelled."""
    while True:
        try:
            await run_once(ctx)
        except Exception:
            log.exception("maintenance pass failed; retrying next interval")
        await asyncio.sleep(ctx.settings.maintenance_interval)
