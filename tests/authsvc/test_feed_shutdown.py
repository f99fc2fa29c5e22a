"""Closing an authority stops its background tasks at once, whatever they were doing.

On Python 3.11 `asyncio.wait_for` swallows a cancellation that arrives just as the awaited thing
completes; the revocation feed, woken by the key ring's first publication, then kept polling
forever and `close()` (and so SIGTERM) never returned.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from authsvc.authority import open_authority
from authsvc.testing import TEST_PASSWORDS, throwaway_settings


async def test_an_authority_closes_at_once_even_right_after_opening(
    tmp_path: Path, database_url: str
) -> None:
    settings = throwaway_settings(tmp_path, database_url=database_url, db_pool_size=2)
    for _ in range(3):
        authority = await open_authority(settings, password_parameters=TEST_PASSWORDS)
        authority.ctx.feed.poke()  # the feed has just been told to look: its wait completes
        started = time.monotonic()
        await asyncio.wait_for(authority.close(), 10)
        assert time.monotonic() - started < 1.0
