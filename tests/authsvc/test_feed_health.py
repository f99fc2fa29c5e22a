"""Heartbeats only from a feed that reads its database: the decision as a pure function, and a
subscriber of a replica whose feed cannot read the event table.

A heartbeat tells a verifier "you hold every revocation": a replica cut off from its database
must fall silent, so that the verifier's staleness bound applies, and speak again once it reads.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from authsvc_client.v1 import authsvc_pb2 as pb
from authsvc_client.v1 import authsvc_pb2_grpc
from sqlalchemy.exc import DBAPIError

from authsvc.errors import TemporarilyUnavailable
from authsvc.events import may_heartbeat
from authsvc.testing import start_authority
from tests.authsvc.calls import bearer
from tests.authsvc.test_watch_revocations import describe, next_event
from tests.conftest import TEST_POOL_SIZE
from tests.databases import table_renamed
from tests.waiting import eventually

BOUND = 20.0  # seconds for anything to happen before a test gives up
HEARTBEAT = 0.05
# The feed reads only when woken (a write, a NOTIFY) or when the test says: never by itself.
POLL = 3600.0
READ_AT = 1_800_000_000.0


# the decision


@pytest.mark.parametrize(
    ("caught_up_at", "now"),
    [
        pytest.param(None, READ_AT, id="never-read-the-table"),
        pytest.param(READ_AT, READ_AT + 6.001, id="just-past-the-bound"),
        pytest.param(READ_AT, READ_AT + 3600, id="cut-off-for-an-hour"),
        # A wall clock stepped back: the read's age is unknown until the next one.
        pytest.param(READ_AT, READ_AT - 60, id="clock-behind-the-read"),
    ],
)
def test_each_way_to_withhold_a_heartbeat(caught_up_at: float | None, now: float) -> None:
    assert not may_heartbeat(caught_up_at, now, bound=6.0)


@pytest.mark.parametrize(
    "now",
    [
        pytest.param(READ_AT, id="read-just-now"),
        pytest.param(READ_AT + 3.5, id="within-the-bound"),
        pytest.param(READ_AT + 6.0, id="at-the-bound"),
    ],
)
def test_a_heartbeat_after_a_recent_read(now: float) -> None:
    assert may_heartbeat(READ_AT, now, bound=6.0)


# a subscriber of a replica cut off from its database


async def test_a_feed_that_cannot_read_its_database_sends_no_heartbeats_until_it_can(
    tmp_path: Path, database_url: str
) -> None:
    async with start_authority(
        tmp_path,
        database_url=database_url,
        db_pool_size=TEST_POOL_SIZE,
        heartbeat_interval=HEARTBEAT,
        revocation_poll_interval=POLL,
        # The subscriber's token outlives the clock's move past POLL (a stream ends with it).
        access_token_ttl=2 * int(POLL),
    ) as running:
        feed = running.authority.ctx.feed
        app = await running.create_client("app", grant_types=["refresh_token"], audiences=["api"])
        issued = await running.authority.issue_token_pair(subject="alice", client_id=app.client_id)
        family_id = issued.family.family_id
        admin = bearer(await running.admin_token())
        async with grpc.aio.insecure_channel(running.address) as channel:
            call = authsvc_pb2_grpc.TokenServiceStub(channel).WatchRevocations(
                pb.WatchRevocationsRequest(cursor=feed.cursor), metadata=admin
            )
            try:
                assert describe(await next_event(call, heartbeats=True)) == ("heartbeat", "")
                async with table_renamed(running.settings.database_url, "revocation_events"):
                    with pytest.raises((TemporarilyUnavailable, DBAPIError)):
                        await feed.catch_up()  # what the tailer does when polled, and fails
                    # Past the bound since the feed last read the table: nothing more is sent.
                    running.clock.advance(HEARTBEAT + POLL + 1)
                    sent, withheld = feed.heartbeats_sent, feed.heartbeats_withheld
                    await eventually(lambda: feed.heartbeats_withheld >= withheld + 3, BOUND)
                    assert feed.heartbeats_sent == sent
                # The table is back: a revocation wakes the feed, which reads it to the end.
                await running.authority.revoke_family(family_id)
                beats = 1  # the one read above
                while (message := await next_event(call, heartbeats=True)).HasField("heartbeat"):
                    beats += 1
                # The subscriber heard nothing between the last heartbeat sent before the clock
                # moved and the event, and hears heartbeats again after it.
                assert beats == sent
                assert describe(message) == ("family_revoked", family_id)
                assert describe(await next_event(call, heartbeats=True)) == ("heartbeat", "")
            finally:
                call.cancel()
