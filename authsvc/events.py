"""The revocation event feed: in order, with a resumable cursor, to every local listener.

Writers append events in the same transaction as the change they describe. This feed tails the
table, applies each event to the in-memory revocation state, reloads the key ring on key events, and
fans events out to `WatchRevocations` subscribers. It reads the table when woken (at once by writes on
this replica; on PostgreSQL, by a NOTIFY from any replica's commit) and every poll interval anyway.

Tailing `cursor > last` never skips an event: appends are serialised by a lock held until commit,
so cursors become visible in increasing order (see `authsvc.storage.sql.EVENT_APPEND_LOCK`).

Cursors count the events of one database, whose stream has an id of its own (`event_stream`). A
subscriber's cursor from another database (reset, replaced) or from after a restored backup is not
resumed from: `classify_cursor` decides, and the subscriber is told to start over.

A heartbeat tells a subscriber it holds every event in the table, and verifiers count it as the
stream being alive. So one goes out only while the feed has lately read the table to its end
(`may_heartbeat`): a replica that cannot read its database falls silent, and its subscribers'
staleness bound (fail closed or open, as each configured) applies instead of a false "caught up".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum

from authsvc.clock import Clock
from authsvc.errors import TemporarilyUnavailable
from authsvc.log import RepeatedFailure
from authsvc.revocation_state import RevocationState
from authsvc.storage.notifications import EventNotifications
from authsvc.storage.records import EventStreamRecord, RevocationEventRecord
from authsvc.storage.sql import SqlStore

log = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 10_000


class _End(Enum):
    """The last item of a subscriber's queue: why its stream ends."""

    ENDED = "ended"  # the feed stops (shutdown): the stream completes, the subscriber resumes
    TOO_SLOW = "too_slow"  # it fell behind: it resumes from its cursor


_Item = RevocationEventRecord | _End


class SubscriberTooSlow(Exception):
    """A subscriber fell too far behind; it should reconnect from its last cursor."""


class Resumption(Enum):
    """What a subscriber's cursor means in this database's event stream."""

    FRESH_START = "fresh_start"  # cursor 0: every revocation still in force
    RESUME = "resume"  # the events after the cursor
    OTHER_STREAM = "other_stream"  # another database's cursor: start over
    AHEAD_OF_STREAM = "ahead_of_stream"  # past the newest event ever written here: start over


def classify_cursor(cursor: int, stream_id: str, stream: EventStreamRecord) -> Resumption:
    """The pure decision behind `subscribe`. `stream_id` names the stream the subscriber's cursor
    came from; empty when it does not know (a client, or the server it last heard, older than
    stream ids), and then only a cursor past the newest event gives a replaced database away.

    A database restored from a backup keeps its stream id but forgets the events written after
    the backup, so a cursor past its `last_cursor` is one of those. Once the restored database
    has written past that cursor, nothing tells the two apart.
    """
    if cursor == 0:
        return Resumption.FRESH_START
    if stream_id and stream_id != stream.stream_id:
        return Resumption.OTHER_STREAM
    if cursor > stream.last_cursor:
        return Resumption.AHEAD_OF_STREAM
    return Resumption.RESUME


_WHY_START_OVER = {
    Resumption.OTHER_STREAM: (
        "cursor {cursor} counts the events of stream {theirs}, not of this database's stream "
        "{ours}: authsvc's database was reset or replaced"
    ),
    Resumption.AHEAD_OF_STREAM: (
        "cursor {cursor} is past the newest event ({last}) of this database's stream {ours}: "
        "authsvc's database was restored from an older backup or reset"
    ),
}


class CursorNotInStream(Exception):
    """The subscriber's cursor does not count in this database's events: it must subscribe
    again from cursor 0, keeping the revocations it holds (this database may not know them)."""

    def __init__(
        self, resumption: Resumption, cursor: int, stream_id: str, stream: EventStreamRecord
    ) -> None:
        shown = stream_id if len(stream_id) <= 64 else stream_id[:61] + "..."  # the caller's
        why = _WHY_START_OVER[resumption].format(
            cursor=cursor, theirs=shown, ours=stream.stream_id, last=stream.last_cursor
        )
        super().__init__(
            f"{why}; subscribe again from cursor 0 without a stream_id, and keep the "
            "revocations already known until they expire"
        )
        self.resumption = resumption


def may_heartbeat(caught_up_at: float | None, now: float, *, bound: float) -> bool:
    """The pure decision behind each heartbeat after a subscriber's backlog: only while the
    feed's last read of the table to its end (`caught_up_at`, as of when that read began; None
    before the first) is at most `bound` seconds old. Not when the clock reads earlier than that
    read: how old it is cannot be told (the feed's next read settles it)."""
    if caught_up_at is None:
        return False
    return 0 <= now - caught_up_at <= bound


@dataclass(frozen=True)
class Subscription:
    """An open subscription: the stream its cursors count in, and its events (None is a
    heartbeat)."""

    stream_id: str
    events: AsyncIterator[RevocationEventRecord | None]


class RevocationFeed:
    """Tails `revocation_events` and fans out to the revocation state, the `listeners` (each
    called with every new event, local or not) and subscribers."""

    def __init__(
        self,
        store: SqlStore,
        state: RevocationState,
        clock: Clock,
        *,
        poll_interval: float,
        on_key_change: Callable[[], Awaitable[None]],
        notifications: EventNotifications | None = None,
        listeners: Sequence[Callable[[RevocationEventRecord], None]] = (),
    ) -> None:
        self._store = store
        self._state = state
        self._clock = clock
        self._poll_interval = poll_interval
        self._on_key_change = on_key_change
        self._listeners = tuple(listeners)
        self._wake = asyncio.Event()
        self._subscribers: set[asyncio.Queue[_Item]] = set()
        self._ending = False
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self.notifications = notifications
        self.cursor = 0
        self.caught_up_at: float | None = None  # see `may_heartbeat`
        self.heartbeats_sent = 0
        self.heartbeats_withheld = 0  # the feed had not read the table lately
        self._keys_stale = False  # a reload of the key ring failed: each read tries again
        # Both are retried at every read, once a second by default: logged once, then a line a
        # minute while they last.
        self._read_failures = RepeatedFailure(log, "revocation feed: reading events", clock)
        self._reload_failures = RepeatedFailure(
            log, "revocation feed: reloading the key ring", clock
        )

    async def start(self) -> None:
        """Name the event stream if this is the database's first open, load every revocation
        still in force and the key ring, then tail from there.

        The cursor is read first. On PostgreSQL each statement of a transaction sees what has
        committed when it runs: read after the events, the cursor could pass an event that
        committed between the two reads, which this replica would then never apply. Read
        before, such an event is read twice, and applying an event again changes nothing. The
        key ring is reloaded after the cursor is read for the same reason: a rotation that
        committed after the ring's first load (`open_authority`) and before the cursor would
        otherwise be in neither."""
        async with self._store.transaction() as tx:
            await tx.name_event_stream(secrets.token_hex(16))
        began = self._clock.now()
        async with self._store.transaction(readonly=True, bulk=True) as tx:
            cursor = await tx.last_event_cursor()
            in_force = await tx.events_in_force(began)
        for event in in_force:
            self._state.apply(event)
        await self._on_key_change()
        self.cursor = cursor
        self.caught_up_at = began
        self._task = asyncio.create_task(self._tail(), name="revocation-feed")
        if self.notifications is not None:
            self._listener = asyncio.create_task(
                self.notifications.listen(self.poke), name="revocation-notifications"
            )

    async def stop(self) -> None:
        for task in (self._listener, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.end_subscriptions()

    def end_subscriptions(self) -> None:
        """End every subscription cleanly, now and any opened from now on: each stream completes
        after what it has been sent, and its subscriber resumes from its cursor (on another
        replica, when this one is shutting down). The feed itself keeps following the table."""
        self._ending = True
        for queue in list(self._subscribers):
            self._end(queue, _End.ENDED)

    def _end(self, queue: asyncio.Queue[_Item], why: _End) -> None:
        self._subscribers.discard(queue)  # so it is ended once, into the slot kept for that
        queue.put_nowait(why)

    def published(self, events: Sequence[RevocationEventRecord]) -> None:
        """This replica committed `events`: apply them now and wake the tailer to fan them out."""
        for event in events:
            self._apply(event)
        self._wake.set()

    def _apply(self, event: RevocationEventRecord) -> None:
        self._state.apply(event)
        for listener in self._listeners:
            listener(event)

    def poke(self) -> None:
        self._wake.set()

    async def _tail(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
            # arrives as the wake-up does, and the feed would then outlive close().
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.catch_up()
            except TemporarilyUnavailable as exc:
                self._read_failures.failed(exc.description)
            except Exception:
                self._read_failures.failed()
            else:
                self._read_failures.succeeded()

    async def catch_up(self) -> None:
        """Read and dispatch every event after the current cursor; `caught_up_at` is then when
        the last (empty) read began."""
        while True:
            # On SQLite the read runs on the event loop: before each one (a bulk revocation's
            # 40,000 events are 40 of them, and a pass may follow the last at once) the loop
            # serves other calls.
            await asyncio.sleep(0)
            if self._keys_stale:
                await self._reload_keys()
            began = self._clock.now()
            async with self._store.transaction(readonly=True) as tx:
                batch = await tx.events_after(self.cursor)
            if not batch:
                self.caught_up_at = began
                return
            for event in batch:
                self._apply(event)
            if any(event.kind == "key" for event in batch):
                # Before the subscribers hear of the change: a verifier told of a key change
                # fetches PublishKeys from this replica next, and must find the new ring.
                await self._reload_keys()
            for event in batch:
                for queue in list(self._subscribers):
                    self._offer(queue, event)
                self.cursor = event.cursor

    async def _reload_keys(self) -> None:
        """Reload the key ring. One that fails (an outage, most often) is tried again at every
        later read until it succeeds; meanwhile the revocations go on flowing, since a feed
        stopped on it would leave every verifier stale, failing closed."""
        self._keys_stale = True
        try:
            await self._on_key_change()
        except TemporarilyUnavailable as exc:
            self._reload_failures.failed(exc.description)
            return
        except Exception:
            self._reload_failures.failed()
            return
        self._keys_stale = False
        self._reload_failures.succeeded()

    def _offer(self, queue: asyncio.Queue[_Item], event: RevocationEventRecord) -> None:
        if queue.qsize() >= SUBSCRIBER_QUEUE:
            # Drop the subscriber rather than the event: it resumes from its cursor.
            self._end(queue, _End.TOO_SLOW)
        else:
            queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(
        self, cursor: int, heartbeat: float, *, stream_id: str = ""
    ) -> AsyncIterator[Subscription]:
        """Events after `cursor` (every revocation in force for 0), then live ones; None is a
        heartbeat after `heartbeat` seconds of silence. `stream_id` is the stream the cursor came
        from; CursorNotInStream when it is not this database's (see `classify_cursor`). Once
        `end_subscriptions` has run, the stream ends after its backlog."""
        # One slot more than events may fill: the end of the stream always fits.
        queue: asyncio.Queue[_Item] = asyncio.Queue(SUBSCRIBER_QUEUE + 1)
        if self._ending:
            queue.put_nowait(_End.ENDED)
        else:
            self._subscribers.add(queue)
        try:
            async with self._store.transaction(readonly=True, bulk=True) as tx:
                stream = await tx.event_stream()
                resumption = classify_cursor(cursor, stream_id, stream)
                if resumption is Resumption.FRESH_START:
                    backlog = await tx.events_in_force(self._clock.now())
                elif resumption is Resumption.RESUME:
                    backlog = await tx.events_after(cursor, limit=1_000_000)
                else:
                    raise CursorNotInStream(resumption, cursor, stream_id, stream)
            yield Subscription(stream.stream_id, self._deliver(queue, cursor, backlog, heartbeat))
        finally:
            self._subscribers.discard(queue)

    async def _deliver(
        self,
        queue: asyncio.Queue[_Item],
        cursor: int,
        backlog: Sequence[RevocationEventRecord],
        heartbeat: float,
    ) -> AsyncIterator[RevocationEventRecord | None]:
        # A healthy feed reads the table at least every poll interval; a heartbeat interval more
        # covers a slow read. Past that, the feed is not reading: say nothing.
        bound = heartbeat + self._poll_interval
        last = cursor
        for event in backlog:
            yield event
            last = max(last, event.cursor)
        # Caught up, by the subscription's own read: it now holds every revocation in force.
        self.heartbeats_sent += 1
        yield None
        while True:
            try:
                async with asyncio.timeout(heartbeat):  # see _tail: not wait_for
                    item = await queue.get()
            except TimeoutError:
                if may_heartbeat(self.caught_up_at, self._clock.now(), bound=bound):
                    self.heartbeats_sent += 1
                    yield None
                else:
                    self.heartbeats_withheld += 1
                continue
            if item is _End.TOO_SLOW:
                raise SubscriberTooSlow("subscriber fell behind; resume from cursor")
            if item is _End.ENDED:
                return
            if item.cursor > last:
                last = item.cursor
                yield item
