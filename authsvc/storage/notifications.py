"""Hearing about other replicas' revocations at once: PostgreSQL LISTEN/NOTIFY.

A transaction that appends revocation events also sends NOTIFY on `EVENTS_CHANNEL`, which the server
delivers when (and only if) it commits. Each replica keeps one dedicated connection listening and,
on each notification, wakes its revocation feed, which then reads the new rows. The notification is
only a hint to look now; the table stays the source of truth and the feed still polls it, so a
notification lost while this connection was down costs at most one poll interval.

The connection is checked every few seconds (a network that drops packets never says it closed)
and re-established with backoff after any failure; the feed is woken after every (re)connect
because nothing is queued for a listener that was not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from authsvc.config import Settings
from authsvc.storage.engine import postgres_connect_args
from authsvc.storage.sql import EVENTS_CHANNEL

log = logging.getLogger(__name__)

APPLICATION_NAME = "authsvc-listener"
KEEPALIVE_INTERVAL = 5.0  # seconds between checks that the listening connection still works
RECONNECT_FIRST = 0.1  # seconds before the first reconnect; doubles up to RECONNECT_MAX
RECONNECT_MAX = 5.0


class EventNotifications:
    """One replica's LISTEN connection; `listen(wake)` runs until cancelled."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        _, options = engine.dialect.create_connect_args(engine.url)
        self._options: dict[str, Any] = {
            **options,
            **postgres_connect_args(settings, application_name=APPLICATION_NAME),
        }
        self.connected = asyncio.Event()  # set while notifications are being received

    def __repr__(self) -> str:  # the options carry the database password
        return f"EventNotifications(connected={self.connected.is_set()})"

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call `wake()` for every notification and after every (re)connect, forever."""
        delay = RECONNECT_FIRST
        while True:
            try:
                await self._listen_until_lost(wake)
                delay = RECONNECT_FIRST
                log.warning("event listener: connection lost; polling until it is back")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "event listener: cannot listen; polling until it can",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )
            except Exception:
                # Anything else (a driver's bug, an option it refuses) must not end the listener
                # for good, silently: the replica would then hear of other replicas' revocations
                # only at each poll.
                log.exception("event listener failed; polling until it listens again")
            finally:
                self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _listen_until_lost(self, wake: Callable[[], None]) -> None:
        conn = await asyncpg.connect(**self._options)
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(EVENTS_CHANNEL, lambda *_notification: wake())
            self.connected.set()
            log.info("event listener: listening for other replicas' revocations")
            wake()  # whatever was announced while nobody listened is only in the table
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):  # not wait_for (it can eat a cancel)
                    async with asyncio.timeout(KEEPALIVE_INTERVAL):
                        await lost.wait()
                if not lost.is_set():
                    await conn.execute("SELECT 1", timeout=KEEPALIVE_INTERVAL)
        finally:
            conn.terminate()
