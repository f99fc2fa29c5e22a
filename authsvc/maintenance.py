"""Background work: scheduled key rotation, purging expired rows, pruning revocation state.

Each pass is one call (`run_once`) so tests drive it with a moved clock; `run_forever` only repeats
it. With several replicas the database locks make sure one replica rotates keys or purges at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass

from authsvc.context import AuthorityContext
from authsvc.errors import TemporarilyUnavailable
from authsvc.keys.rotation import rotate_keys
from authsvc.storage.sql import MAINTENANCE_LOCK

log = logging.getLogger(__name__)

AUDIT_RETENTION = 90 * 86400
PURGE_BATCH = 5_000  # rows per table per purge transaction
PURGE_ROUNDS = 100  # purge transactions per pass, at most: a backlog is worked off over passes


@dataclass(frozen=True)
class MaintenanceReport:
    keys_changed: bool
    purged: dict[str, int]
    pruned: int


async def run_once(ctx: AuthorityContext) -> MaintenanceReport:
    """One pass. Skips the parts another replica is doing right now."""
    now = ctx.clock.now()
    rotation = await rotate_keys(ctx, wait=False)
    purged = await _purge(ctx, now)
    pruned = ctx.revocations.prune(now)
    if any(purged.values()) or pruned:
        log.info("purged expired rows", extra={"purged": purged, "pruned": pruned})
    return MaintenanceReport(bool(rotation and rotation.changed), purged, pruned)


async def _purge(ctx: AuthorityContext, now: float) -> dict[str, int]:
    """Expired rows, `PURGE_BATCH` per table per transaction, until none is left or the pass has
    done `PURGE_ROUNDS` of them (the next pass goes on); nothing while another replica purges."""
    purged: Counter[str] = Counter()
    for _ in range(PURGE_ROUNDS):
        async with ctx.store.transaction(bulk=True) as tx:
            if not await tx.try_lock(MAINTENANCE_LOCK):
                break
            counts = await tx.purge_expired(now, AUDIT_RETENTION, limit=PURGE_BATCH)
        purged.update(counts)
        if max(counts.values()) < PURGE_BATCH:
            break
    return dict(purged)


async def run_forever(ctx: AuthorityContext) -> None:
    """Repeat `run_once` every `maintenance_interval` seconds until cancelled."""
    while True:
        try:
            await run_once(ctx)
        except TemporarilyUnavailable as exc:
            log.warning("maintenance pass skipped: %s", exc.description)
        except Exception:
            log.exception("maintenance pass failed; retrying next interval")
        await asyncio.sleep(ctx.settings.maintenance_interval)
