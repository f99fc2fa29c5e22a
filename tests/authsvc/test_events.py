"""The revocation feed itself: where a subscriber resumes, and it stops when told to, whatever it
was doing."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from authsvc import authority as authority_module
from authsvc.authority import Authority, open_authority
from authsvc.clock import ManualClock
from authsvc.context import AuthorityContext
from authsvc.events import CursorNotInStream, Resumption, classify_cursor
from authsvc.storage.records import EventStreamRecord, RevocationEventRecord
from authsvc.testing import throwaway_settings

BOUND = 5.0


OURS = "0f" * 16
THEIRS = "a1" * 16
STREAM = EventStreamRecord(stream_id=OURS, last_cursor=40)


@pytest.mark.parametrize(
    ("cursor", "stream_id", "expected"),
    [
        pytest.param(0, "", Resumption.FRESH_START, id="fresh-start"),
        pytest.param(0, THEIRS, Resumption.FRESH_START, id="fresh-start-whatever-the-stream"),
        pytest.param(12, OURS, Resumption.RESUME, id="same-stream-behind"),
        pytest.param(40, OURS, Resumption.RESUME, id="same-stream-caught-up"),
        pytest.param(41, OURS, Resumption.AHEAD_OF_STREAM, id="same-stream-ahead-restored"),
        pytest.param(12, THEIRS, Resumption.OTHER_STREAM, id="other-stream-behind"),
        pytest.param(99, THEIRS, Resumption.OTHER_STREAM, id="other-stream-ahead"),
        # A client older than stream ids, or one that has only heard servers older than them:
        pytest.param(12, "", Resumption.RESUME, id="no-stream-behind"),
        pytest.param(40, "", Resumption.RESUME, id="no-stream-caught-up"),
        pytest.param(41, "", Resumption.AHEAD_OF_STREAM, id="no-stream-ahead"),
    ],
)
def test_where_a_subscriber_resumes(cursor: int, stream_id: str, expected: Resumption) -> None:
    assert classify_cursor(cursor, stream_id, STREAM) is expected


@pytest.mark.parametrize(
    ("cursor", "stream_id", "why"),
    [
        pytest.param(41, OURS, "restored from an older backup", id="ahead"),
        pytest.param(12, THEIRS, f"stream {THEIRS}, not of this database's stream", id="other"),
    ],
)
def test_a_subscriber_told_to_start_over_learns_why_and_what_to_do(
    cursor: int, stream_id: str, why: str
) -> None:
    error = CursorNotInStream(classify_cursor(cursor, stream_id, STREAM), cursor, stream_id, STREAM)
    assert why in str(error)
    assert "subscribe again from cursor 0 without a stream_id" in str(error)
    assert "keep the revocations already known" in str(error)


async def _rotate_keys(authority: Authority) -> None:
    await authority.rotate_keys(immediate=True)


async def _revoke_subject(authority: Authority) -> None:
    await authority.revoke_subject("alice")


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(_rotate_keys, id="after-key-rotation"),
        pytest.param(_revoke_subject, id="after-revocation"),
    ],
)
async def test_close_right_after_a_local_write_does_not_hang(
    tmp_path: Path, write: Callable[[Authority], Awaitable[None]]
) -> None:
    # A write wakes the tailer (`published`) and the caller (the CLI, a shutdown) closes at once,
    # in the same task: the wake-up and the cancellation land in one loop iteration, and the
    # cancellation must not be lost. (Closing from another task would hide the race.)
    authority = await open_authority(throwaway_settings(tmp_path), ManualClock())

    async def write_then_close() -> None:
        await write(authority)
        await authority.close()

    closing = asyncio.ensure_future(write_then_close())
    done, _ = await asyncio.wait([closing], timeout=BOUND)
    if not done:  # leave nothing running behind a failure
        closing.cancel()
        await authority.close()
        pytest.fail("Authority.close() hung: the revocation feed ignored its cancellation")
    closing.result()


async def test_a_subscriber_cancelled_as_an_event_arrives_stops(tmp_path: Path) -> None:
    authority = await open_authority(throwaway_settings(tmp_path), ManualClock())
    try:
        async with authority.subscribe(authority.ctx.feed.cursor, heartbeat=3600) as opened:
            stream = opened.events
            assert await anext(stream) is None  # caught up
            waiting = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0)  # the subscriber now waits on its queue
            event = RevocationEventRecord(10**9, 0.0, 1.0, "jti", "x")
            for queue in list(authority.ctx.feed._subscribers):
                queue.put_nowait(event)  # an event arrives...
            waiting.cancel()  # ...in the same loop iteration as the cancellation
            await asyncio.wait([waiting], timeout=BOUND)
            assert waiting.cancelled(), "the subscriber swallowed its cancellation"
    finally:
        await authority.close()


async def test_a_key_ring_that_will_not_reload_is_logged_once_not_at_every_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Each read of the feed (a second apart by default) tries the reload again; its traceback
    # at every try had buried every other line of the log.
    clock = ManualClock()
    authority = await open_authority(throwaway_settings(tmp_path), clock)
    reload = authority_module.reload_keys
    broken = True

    async def reload_keys(ctx: AuthorityContext) -> None:
        if broken:
            raise RuntimeError("a key sealed with another KEK")
        await reload(ctx)

    monkeypatch.setattr(authority_module, "reload_keys", reload_keys)
    caplog.set_level(logging.INFO, logger="authsvc.events")
    feed = authority.ctx.feed
    try:
        await feed._reload_keys()  # as after a key event
        for _ in range(30):
            clock.advance(1.0)
            await feed.catch_up()
        broken = False
        await feed.catch_up()
    finally:
        await authority.close()
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert [(level, traceback) for level, _, traceback in lines] == [
        ("ERROR", True),
        ("WARNING", False),
    ]
    assert lines[0][1] == "revocation feed: reloading the key ring failed; retrying"
    assert re.fullmatch(
        r"revocation feed: reloading the key ring works again, after \d+ failed tries in 30 s",
        lines[1][1],
    )
