"""Waiting on a condition with a bound, instead of sleeping for a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(condition: Callable[[], Awaitable[bool] | bool], within: float = 5.0) -> float:
    """Poll `condition` until it holds; the seconds it took. AssertionError after `within`."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        outcome = condition()
        if outcome if isinstance(outcome, bool) else await outcome:
            return time.monotonic() - started
        await asyncio.sleep(0.002)
    raise AssertionError(f"condition not met within {within}s")
